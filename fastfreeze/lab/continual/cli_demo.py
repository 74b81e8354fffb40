"""`fastfreeze demo`: the tiny Biography experiment on CPU (SEQ vs Freeze, the recovery curve), table + findings.

Usage: `fastfreeze demo [--preset quick|tiny] [--output-dir runs/demo] [--num-frozen-layers K] [--pretrain]`.
No download: the data, tokenizer and model are built locally; tiny's pretrained weights ship with the
package and are used only when their recipe is the run's (`--pretrain` trains them instead; see
fastfreeze.lab.continual.shipped). Rerunning resumes (finished stages are skipped), so a second call prints
the table at once.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path


def main(argv: list[str]) -> int:
    """Exit 0 with the table printed, 2 on a config error. Usage: `main(["--preset", "quick"])`."""
    p = argparse.ArgumentParser(prog="fastfreeze demo", description=__doc__.splitlines()[0])
    p.add_argument("--preset", choices=("quick", "tiny"), default="tiny")
    p.add_argument("--output-dir", default="runs/demo")
    p.add_argument("--num-frozen-layers", type=int, default=None,
                   help="k for the Freeze arm (embedding + bottom k layers); default: the preset's")
    # One thread by default: the demo then prints the same numbers on any machine, whatever its core count
    # (with transformers 5.25 the two-thread run's SEQ rows differ from the one-thread run's; docs/demo.md).
    p.add_argument("--threads", type=int, default=1,
                   help="torch intra-op threads (default 1: the README's numbers; others may differ in the last digits)")
    p.add_argument("--pretrain", action="store_true",
                   help="pretrain from scratch instead of copying the shipped pretrained checkpoint (tiny)")
    p.add_argument("--quiet", action="store_true", help="only print the final table")
    a = p.parse_args(argv)
    from fastfreeze.lab.continual.config import ConfigError, StrategyConfig
    from fastfreeze.lab.continual.presets import load_preset
    from fastfreeze.lab.continual.report import findings, format_curve, format_table
    from fastfreeze.lab.continual.runner import run_continual

    import torch

    torch.set_num_threads(max(1, a.threads))
    try:
        cfg = load_preset(a.preset, output_dir=a.output_dir)
        cfg.pretrain.shipped = cfg.pretrain.shipped and not a.pretrain
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
    curve = format_curve(results)
    if curve:
        print("\nRecovery curve: Task-0 accuracy at checkpoints of Task 1, before and after a short recovery")
        print(curve)
    print()
    print("\n".join(findings(results)))
    print(f"report: {out / 'report.md'}")
    print("plots:  " + ", ".join(str(out / v) for v in results.get("plots", {}).values()))
    print(f"results: {out / 'results.json'}")
    return 0
