"""`python -m benchmarks.memory` on the toy preset: the arms match the analytic model byte for byte, and what carries over to a GPU holds."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    out = tmp_path_factory.mktemp("mem")
    proc = subprocess.run([sys.executable, "-m", "benchmarks.memory", "--preset", "mem-toy", "--kernels", "both",
                           "--out", str(out)], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads((out / "memory_mem-toy.json").read_text())["arms"]


def _arm(rows, kind, ckpt, kernels="torch", fused=True):
    return next(r for r in rows if r["kind"] == kind and r["ckpt"] == ckpt and r["kernels"] == kernels
                and (r["fused_loss"] in (None, fused)))


def test_every_arm_matches_the_analytic_model(toy):
    assert len(toy) == 16
    for r in toy:
        p = r["predicted"]
        assert abs(r["saved_bytes"] - p["saved_bytes"]) <= 16, r  # a loss scalar or two
        assert r["live_at"]["forward"] == pytest.approx(p["held_bytes"], rel=0.01), r


def test_what_carries_over_to_a_gpu(toy):
    b, t = toy[0]["batch_shape"]
    h, v, k = 64, 1002, 2
    saved = {kind: _arm(toy, kind, False)["saved_bytes"] for kind in ("naive", "ff", "ff-warm", "floor")}
    assert len(set(saved.values())) == 1  # no prefix activations in any freeze arm (naive: autograd skips them too)
    held = lambda kind, **kw: _arm(toy, kind, True, **kw)["live_at"]["forward"]  # noqa: E731
    assert held("naive") - held("ff") == k * b * t * h * 2  # naive+ckpt keeps the k frozen blocks' inputs
    off, on = _arm(toy, "ff", False, "triton", False), _arm(toy, "ff", False, "triton", True)
    assert off["saved_bytes"] - on["saved_bytes"] >= 4 * b * t * v  # no fp32 [tokens x vocab] log-softmax
    assert on["peak_activation_bytes"] < 0.5 * off["peak_activation_bytes"]
