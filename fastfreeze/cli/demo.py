"""`fastfreeze demo`: the tiny Biography experiment on CPU (SEQ vs Freeze vs recovery), printed as one table.

Usage: `fastfreeze demo [--preset quick|tiny] [--output-dir runs/demo] [--num-frozen-layers K]`.
No download: the data, tokenizer and model are built locally. Rerunning resumes (finished stages
are skipped), so a second call prints the table at once.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from .config import ConfigError, StrategyConfig


def summary_rows(results: dict) -> list[tuple[str, float | None, float | None]]:
    """(label, Task-0 accuracy, Task-1 accuracy) rows of the demo table from a results dict."""
    arms = results["arms"]
    seq = next((a for a in arms.values() if a["strategy"]["name"] == "seq"), None)
    first = seq or next(iter(arms.values()))
    R = first["accuracy_matrix"]
    rows = [("after Task 0", R[0][0], R[0][1])]
    for name, arm in arms.items():
        s = arm["strategy"]
        label = "SEQ" if s["name"] == "seq" else (
            f"Freeze (embedding + {s['num_frozen_layers']} layers)" if s["name"] == "freeze" else name)
        R = arm["accuracy_matrix"]
        rows.append((f"after Task 1, {label}", R[-1][0], R[-1][-1]))
    for name, arm in arms.items():
        rec = arm.get("recovery")
        if rec:
            s = arm["strategy"]
            label = "SEQ" if s["name"] == "seq" else (f"Freeze k={s['num_frozen_layers']}" if s["name"] == "freeze" else name)
            last = str(len(arm["accuracy_matrix"]) - 1)
            rows.append((f"{label} + recovery", rec["after"][str(rec["task"])]["exact_match"], rec["after"][last]["exact_match"]))
    return rows


def format_table(results: dict) -> str:
    """The demo's markdown table (exact match, percent)."""
    pct = lambda v: "-" if v is None else f"{100 * v:.1f}%"  # noqa: E731
    lines = ["| model state | Task 0 (held-out people) | Task 1 |", "|---|---|---|"]
    for label, t0, t1 in summary_rows(results):
        lines.append(f"| {label} | {pct(t0)} | {pct(t1)} |")
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    from .presets import load_preset
    from .runner import run_continual

    p = argparse.ArgumentParser(prog="fastfreeze demo", description=__doc__.splitlines()[0])
    p.add_argument("--preset", choices=("quick", "tiny"), default="tiny")
    p.add_argument("--output-dir", default="runs/demo")
    p.add_argument("--num-frozen-layers", type=int, default=None,
                   help="k for the Freeze arm (embedding + bottom k layers); default: the preset's")
    p.add_argument("--threads", type=int, default=None,
                   help="torch intra-op threads (default: torch's choice); 1 is fastest on a busy shared machine")
    p.add_argument("--quiet", action="store_true", help="only print the final table")
    a = p.parse_args(argv)
    if a.threads is not None:
        import torch

        torch.set_num_threads(max(1, a.threads))
    try:
        cfg = load_preset(a.preset, output_dir=a.output_dir)
        if a.num_frozen_layers is not None:
            cfg.strategies = [s for s in cfg.strategies if s.name != "freeze"] + [
                StrategyConfig(name="freeze", num_frozen_layers=a.num_frozen_layers, from_task=1)]
            cfg.validate()
        start = time.time()
        results = run_continual(cfg, log=(lambda *_: None) if a.quiet else print)
    except ConfigError as e:
        print(f"fastfreeze demo: {e}", file=sys.stderr)
        return 2
    out = Path(cfg.output_dir)
    print()
    print(f"Biography benchmark, preset {a.preset!r}: exact match of greedy answers ({time.time() - start:.0f}s).")
    print(format_table(results))
    seq = results["arms"].get("seq")
    if seq and seq.get("dense"):
        h = seq["dense"]["history"]
        low = min(h, key=lambda r: r["exact_match"])
        print(f"Under SEQ, Task-0 accuracy fell from {100 * h[0]['exact_match']:.1f}% to "
              f"{100 * low['exact_match']:.1f}% by step {low['step']} of Task 1.")
    print(f"report: {out / 'report.md'}")
    print("plots:  " + ", ".join(str(out / v) for v in results.get("plots", {}).values()))
    print(f"results: {out / 'results.json'}")
    return 0
