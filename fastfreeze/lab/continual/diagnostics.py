"""Update orthogonality: principal angles between the weight updates of two training windows, per layer and component.

For a weight W with snapshots W0 (window start), W1 (boundary) and W2 (end), the two updates
are D1 = W1 - W0 and D2 = W2 - W1. Each update's top left-singular directions covering
`energy` (default 99%) of its squared singular values span a subspace of the output space;
the cosines of the principal angles between the two subspaces are the singular values of
U1^T U2. Mean cosine near 0: the second window moves the weights in directions orthogonal to
the first (what the paper sees in the bottom layers after a task switch); near 1: same
directions. `random_cos` = sqrt(max(r1, r2) / n), roughly the mean cosine of random subspaces
of the same ranks in n dimensions: the baseline to compare against (at 99% energy the ranks can
be large, and then even unrelated updates share directions).

Rendering (`fastfreeze.lab.continual.report.markdown_table`) and the command line (`fastfreeze orthogonality
W0_DIR W1_DIR W2_DIR`, fastfreeze.lab.continual.cli_orthogonality) live elsewhere.
"""
from __future__ import annotations

import math
import re

import torch
from transformers import TrainerCallback

_LAYER_RE = re.compile(r"layers\.(\d+)\.(.+)\.weight$")


def name_parts(name: str) -> tuple[str, str] | None:
    """("3", "self_attn.q_proj") for a decoder-layer matrix, ("emb", name) for the input embedding, else None."""
    m = _LAYER_RE.search(name)
    if m:
        return m.group(1), m.group(2)
    if "embed_tokens" in name or "embed_in" in name or name.endswith("wte.weight"):
        return "emb", "embedding"
    return None


def snapshot(model) -> dict[str, torch.Tensor]:
    """CPU float32 copies of every 2-D matrix that `name_parts` recognizes."""
    return {
        n: p.detach().float().cpu().clone()
        for n, p in model.named_parameters()
        if p.ndim == 2 and name_parts(n) is not None
    }


def top_subspace(delta: torch.Tensor, energy: float) -> torch.Tensor:
    """Orthonormal columns spanning the top left-singular directions of `delta` covering `energy` of sum(s^2)."""
    U, S, _ = torch.linalg.svd(delta.double(), full_matrices=False)
    power = S.pow(2)
    cum = torch.cumsum(power, 0) / power.sum()
    rank = int((cum < energy - 1e-12).sum().item()) + 1
    return U[:, : min(rank, U.shape[1])]


def principal_cosines(A: torch.Tensor, B: torch.Tensor) -> torch.Tensor:
    """Cosines of the principal angles between span(A) and span(B) (orthonormal columns), descending."""
    return torch.linalg.svdvals(A.T @ B).clamp(0.0, 1.0)


def update_orthogonality(
    w0: dict[str, torch.Tensor], w1: dict[str, torch.Tensor], w2: dict[str, torch.Tensor], energy: float = 0.99
) -> list[dict]:
    """One row per matrix: layer, component, ranks, mean/max principal cosine, and the random baseline.

    Usage: `rows = update_orthogonality(snapshot(m) at step 0, ... at 150, ... at end)`.
    Matrices that did not move in one window (frozen) get `frozen: True` and no cosines.
    """
    rows = []
    for name in w0:
        if name not in w1 or name not in w2:
            continue
        layer, comp = name_parts(name)
        d1, d2 = w1[name] - w0[name], w2[name] - w1[name]
        # Embedding rows are tokens: its "output space" is the hidden dimension, so use the transpose.
        if layer == "emb":
            d1, d2 = d1.T, d2.T
        row = {"name": name, "layer": layer, "component": comp}
        if not d1.abs().max() > 0 or not d2.abs().max() > 0:
            row.update(frozen=True, rank_1=0, rank_2=0, mean_cos=None, max_cos=None, random_cos=None)
        else:
            u1, u2 = top_subspace(d1, energy), top_subspace(d2, energy)
            cos = principal_cosines(u1, u2)
            n = d1.shape[0]
            row.update(
                frozen=False,
                rank_1=u1.shape[1],
                rank_2=u2.shape[1],
                dim=n,
                mean_cos=float(cos.mean()),
                max_cos=float(cos.max()),
                random_cos=math.sqrt(max(u1.shape[1], u2.shape[1]) / n),
            )
        rows.append(row)
    return rows


def layer_summary(rows: list[dict]) -> list[dict]:
    """Mean principal cosine per layer (over its moving components), bottom to top."""
    by_layer: dict[str, list[float]] = {}
    for r in rows:
        if not r["frozen"]:
            by_layer.setdefault(r["layer"], []).append(r["mean_cos"])
    order = sorted(by_layer, key=lambda k: -1 if k == "emb" else int(k))
    return [{"layer": k, "mean_cos": sum(by_layer[k]) / len(by_layer[k]), "components": len(by_layer[k])} for k in order]


class WindowSnapshots(TrainerCallback):
    """Snapshots the weights at step 0, at `boundary_step` and at the end of training (for update_orthogonality).

    If training is shorter than twice the boundary, the boundary moves to half the run (recorded).
    """

    def __init__(self, boundary_step: int):
        self.requested = boundary_step
        self.boundary = boundary_step
        self.snaps: dict[str, dict] = {}

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        if state.max_steps and self.requested >= state.max_steps:
            self.boundary = max(1, state.max_steps // 2)
        self.snaps["start"] = snapshot(model)

    def on_step_end(self, args, state, control, model=None, **kwargs):
        if state.global_step == self.boundary:
            self.snaps["boundary"] = snapshot(model)

    def on_train_end(self, args, state, control, model=None, **kwargs):
        self.snaps["end"] = snapshot(model)
        self.end_step = state.global_step

    def result(self, energy: float) -> dict:
        if "boundary" not in self.snaps:
            return {"error": f"training ended before the boundary step {self.boundary}"}
        rows = update_orthogonality(self.snaps["start"], self.snaps["boundary"], self.snaps["end"], energy)
        return {
            "windows": [[0, self.boundary], [self.boundary, self.end_step]],
            "energy": energy,
            "rows": rows,
            "per_layer": layer_summary(rows),
        }
