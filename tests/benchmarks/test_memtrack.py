"""benchmarks/memtrack.py: the tracker counts what autograd saves, what is live, and the gradients, from the tensors themselves."""
from __future__ import annotations

import torch

from benchmarks.memtrack import MemTracker


def test_tracker_counts_saved_live_and_grads():
    lin = torch.nn.Linear(64, 64)
    with torch.no_grad():
        x = torch.randn(32, 64)
    with MemTracker(lin) as mt:
        # addmm keeps x (the batch: not counted) and the weight (a parameter: not counted); relu keeps its output
        y = torch.relu(lin(x))
        v = y[:, :8]  # a view allocates nothing
        loss = (y * y).sum() + v.sum()
        mt.mark("forward")
        loss.backward()
    rep = mt.report()
    assert rep["saved_bytes"] == 32 * 64 * 4
    assert rep["live_at"]["forward"] == 32 * 64 * 4 + 4  # relu output + the loss scalar (lin's output freed)
    assert rep["grad_bytes"] == (64 * 64 + 64) * 4
    assert rep["peak_activation_bytes"] < rep["peak_bytes"]
