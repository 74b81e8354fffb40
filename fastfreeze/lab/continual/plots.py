"""PNG plots of a run (matplotlib, Agg backend): accuracy matrices, Task-0 accuracy during Task 1, orthogonality."""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # headless: CI machines and servers have no display
import matplotlib.pyplot as plt  # noqa: E402

from fastfreeze import _io  # noqa: E402


def _save(fig, path: Path) -> None:
    path = Path(path)
    try:
        with _io.atomic_file(path, "wb") as f:
            fig.savefig(f, format=path.suffix.lstrip(".") or "png", dpi=110, bbox_inches="tight")
    finally:
        plt.close(fig)


def plot_accuracy_matrices(arms: dict, path: Path) -> None:
    """One heatmap per arm: R[i][j] = exact match on task j (column) after training task i (row)."""
    n = len(arms)
    fig, axes = plt.subplots(1, n, figsize=(3.6 * n, 3.2), squeeze=False)
    for ax, (name, arm) in zip(axes[0], arms.items()):
        R = arm["accuracy_matrix"]
        T = len(R)
        grid = [[float("nan") if v is None else v for v in row] for row in R]
        im = ax.imshow(grid, vmin=0, vmax=1, cmap="viridis")
        for i in range(T):
            for j in range(T):
                if R[i][j] is not None:
                    ax.text(j, i, f"{100 * R[i][j]:.0f}", ha="center", va="center",
                            color="white" if R[i][j] < 0.6 else "black", fontsize=9)
        ax.set_xticks(range(T))
        ax.set_yticks(range(T))
        ax.set_xlabel("evaluated on task")
        ax.set_ylabel("after training task")
        ax.set_title(name)
    fig.colorbar(im, ax=axes[0].tolist(), shrink=0.8, label="exact match")
    _save(fig, path)


def plot_dense(arms: dict, path: Path) -> bool:
    """Task-0 exact match (solid) and first-token accuracy (dashed) across the first steps of Task 1, per arm."""
    fig, ax = plt.subplots(figsize=(6, 3.6))
    drawn = False
    for name, arm in arms.items():
        dense = arm.get("dense")
        if not dense:
            continue
        h = dense["history"]
        steps = [r["step"] for r in h]
        line, = ax.plot(steps, [r["exact_match"] for r in h], label=f"{name} exact match")
        ax.plot(steps, [r["first_token"] for r in h], "--", color=line.get_color(), label=f"{name} first token")
        drawn = True
    if not drawn:
        plt.close(fig)
        return False
    return _save_accuracy_axes(fig, ax, "optimizer step of Task 1", "Task-0 accuracy (held-out people)", path)


def _save_accuracy_axes(fig, ax, xlabel: str, ylabel: str, path: Path) -> bool:
    """The accuracy-vs-step plots' common frame (labels, 0..1 axis, legend, grid), then save."""
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_ylim(0, 1)
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    _save(fig, path)
    return True


def plot_recovery_curve(arms: dict, path: Path) -> bool:
    """Task-0 exact match vs Task-1 step: unrecovered (dense curve, thin) and after recovery (markers), per arm."""
    items = [(n, a) for n, a in arms.items() if a.get("recovery_curve")]
    if not items:
        return False
    fig, ax = plt.subplots(figsize=(6.4, 3.8))
    for name, arm in items:
        pts = arm["recovery_curve"]["points"]
        steps = [p["step"] for p in pts]
        line, = ax.plot(steps, [p["after"] for p in pts], "o-", lw=2, label=f"{name} recovered")
        dense = (arm.get("dense") or {}).get("history")
        if dense:
            ax.plot([r["step"] for r in dense], [r["exact_match"] for r in dense], "-", lw=0.8,
                    color=line.get_color(), alpha=0.7, label=f"{name} unrecovered (dense)")
        ax.plot(steps, [p["before"] for p in pts], "x", color=line.get_color(), label=f"{name} unrecovered")
    return _save_accuracy_axes(fig, ax, "Task-1 step of the checkpoint", "Task-0 exact match (held-out people)", path)


def plot_orthogonality(arms: dict, path: Path) -> bool:
    """Mean principal cosine between the two windows' updates, per layer and component (one panel per arm)."""
    items = [(n, a["orthogonality"]) for n, a in arms.items() if a.get("orthogonality") and a["orthogonality"].get("rows")]
    if not items:
        return False
    fig, axes = plt.subplots(1, len(items), figsize=(6 * len(items), 3.6), squeeze=False)
    for ax, (name, res) in zip(axes[0], items):
        rows = [r for r in res["rows"] if not r["frozen"]]
        layers = sorted({r["layer"] for r in rows}, key=lambda k: -1 if k == "emb" else int(k))
        x = {k: i for i, k in enumerate(layers)}
        for comp in sorted({r["component"] for r in rows}):
            pts = sorted(((x[r["layer"]], r["mean_cos"]) for r in rows if r["component"] == comp))
            ax.plot([p[0] for p in pts], [p[1] for p in pts], "o-", label=comp, markersize=4)
        base = [max((r["random_cos"] for r in rows if r["layer"] == k), default=0) for k in layers]
        ax.plot(range(len(layers)), base, "k:", label="random subspaces")
        ax.set_xticks(range(len(layers)))
        ax.set_xticklabels(layers)
        ax.set_xlabel("layer (emb = input embedding)")
        ax.set_ylabel("mean principal cosine")
        ax.set_ylim(0, 1)
        w = res.get("windows")
        ax.set_title(f"{name}: updates {w[0]} vs {w[1]}" if w else name, fontsize=9)
        ax.legend(fontsize=6, ncol=2)
        ax.grid(alpha=0.3)
    _save(fig, path)
    return True
