"""Plots for bench_train results: tokens/s and peak memory per arm, and step time against k.

Usage:
    python -m benchmarks.train.plot benchmarks/results/bench_train_cpu-small.json   # writes *_arms.png, *_k.png next to it
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from fastfreeze import _io  # noqa: E402

LABELS = {"full": "full FT", "naive": "naive freeze", "liger": "naive + Liger", "ff": "FastFreeze",
          "ff-warm": "FF warm cache", "ff-cold": "FF cold cache", "floor": "suffix-only floor",
          "floor-loop": "floor (no Trainer)"}


def _save(fig, path: Path) -> None:
    with _io.atomic_file(path, "wb") as f:
        fig.savefig(f, format="png", dpi=120, bbox_inches="tight")
    plt.close(fig)


def _title(meta: dict) -> str:
    return f"{meta['preset']} · {meta['device'][:60]} · {meta['date'][:10]}"


def plot_arms(result: dict, path: Path) -> bool:
    """Bars per main arm (k = the run's k): tokens/s and peak memory, checkpointing off and on."""
    k = result["meta"]["k"]
    rows = [r for r in result["arms"] if r["k"] == k and r.get("tokens_per_s") and not r["group"].startswith("sweep")]
    if not rows:
        return False
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    names = [f"{LABELS.get(r['kind'], r['kind'])}{' +ckpt' if r['ckpt'] else ''}" for r in rows]
    colors = ["#4c72b0" if not r["ckpt"] else "#dd8452" for r in rows]
    for r, i in zip(rows, range(len(rows))):
        if r["kind"].startswith("ff"):
            colors[i] = "#55a868" if not r["ckpt"] else "#8fd19e"
    ys = range(len(rows))
    axes[0].barh(ys, [r["tokens_per_s"] for r in rows], color=colors)
    axes[0].set_xlabel("tokens/s (real tokens, median step)")
    mem = [(r.get("peak_mem_bytes") or 0) / 2**20 for r in rows]
    axes[1].barh(ys, mem, color=colors)
    axes[1].set_xlabel("peak memory (MiB; method in the JSON/markdown)")
    for ax in axes:
        ax.set_yticks(list(ys))
        ax.set_yticklabels(names)
        ax.invert_yaxis()
        ax.grid(axis="x", alpha=0.3)
    axes[1].set_yticklabels([])
    for i, r in enumerate(rows):
        if r.get("tps_vs_naive"):
            axes[0].text(r["tokens_per_s"], i, f" {r['tps_vs_naive']:.2f}x", va="center", fontsize=8)
        if r.get("mem_vs_naive"):
            axes[1].text(mem[i], i, f" {r['mem_vs_naive']:.2f}x", va="center", fontsize=8)
    fig.suptitle(f"bench_train, k = {k} (ratios vs naive freeze) — {_title(result['meta'])}", fontsize=10)
    _save(fig, path)
    return True


def plot_k(result: dict, path: Path) -> bool:
    """Median step time against k for naive, FastFreeze and FastFreeze warm cache (checkpointing off)."""
    series: dict[str, list[tuple[int, float]]] = {}
    for r in result["arms"]:
        if r["ckpt"] or not r.get("median_step_s") or r["kind"] not in ("naive", "ff", "ff-warm", "floor"):
            continue
        series.setdefault(r["kind"], []).append((r["k"], r["median_step_s"]))
    if sum(len(v) > 1 for v in series.values()) == 0:
        return False
    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    for kind, pts in series.items():
        pts.sort()
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=LABELS[kind])
    full = next((r for r in result["arms"] if r["kind"] == "full" and not r["ckpt"] and r.get("median_step_s")), None)
    if full:
        ax.axhline(full["median_step_s"], color="gray", ls="--", label="full FT")
    ax.set_xlabel("k (frozen decoder layers)")
    ax.set_ylabel("median step time (s)")
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    ax.legend()
    ax.set_title(f"step time vs k — {_title(result['meta'])}", fontsize=9)
    _save(fig, path)
    return True


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("json", nargs="+", help="bench_train_<preset>.json files")
    p.add_argument("--out", default=None, help="directory for the PNGs (default: next to each JSON)")
    args = p.parse_args(argv)
    for name in args.json:
        src = Path(name)
        if not src.exists():
            raise SystemExit(f"{src} not found; run python -m benchmarks.train first")
        result = json.loads(src.read_text())
        out = Path(args.out) if args.out else src.parent
        out.mkdir(parents=True, exist_ok=True)
        for suffix, fn in (("arms", plot_arms), ("k", plot_k)):
            target = out / f"{src.stem}_{suffix}.png"
            print(f"{target}: {'written' if fn(result, target) else 'skipped (no data)'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
