"""FLOP model of one training step per bench_train arm: the table of predicted step-time ratios.

The model (what each block's forward and backward cost, per arm) is documented and implemented once, in
`fastfreeze.estimate.flops`; this module prints its predictions for the benchmark presets.

Usage:
    python -m benchmarks.train.flop_model --preset gpu-1b          # table of predicted ratios vs naive freezing
    from benchmarks.train.flop_model import predicted_ratio; predicted_ratio(preset, "ff-warm", k=8, ckpt=False)
"""
from __future__ import annotations

import argparse
import sys

# The model itself lives in the package (`fastfreeze estimate` uses it); re-exported for the benchmarks.
from fastfreeze.estimate.flops import ARMS, ArmGraph, BlockCost, arm_graph, costs, predicted_ratio, step_flops

__all__ = ["ARMS", "ArmGraph", "BlockCost", "arm_graph", "costs", "main", "predicted_ratio", "step_flops", "table"]


def table(preset, k: int | None = None) -> str:
    k = preset.k if k is None else k
    lines = [f"FLOP-model predictions for `{preset.name}` (L={preset.layers}, H={preset.hidden}, "
             f"I={preset.intermediate}, V={preset.vocab}, T={preset.seq}, k={k}): step time / naive "
             "(tokens/s gain = 1 / ratio)", "", "| arm | no ckpt | ckpt |", "|---|---|---|"]
    for kind in ARMS:
        a, b = predicted_ratio(preset, kind, k, False), predicted_ratio(preset, kind, k, True)
        lines.append(f"| {kind} | {a:.3f} ({1 / a:.2f}x) | {b:.3f} ({1 / b:.2f}x) |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    from benchmarks.train import presets as tp

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--preset", default="cpu-small", choices=sorted(tp.PRESETS))
    p.add_argument("--k", type=int, default=None)
    args = p.parse_args(argv)
    print(table(tp.PRESETS[args.preset], args.k))
    return 0


if __name__ == "__main__":
    sys.exit(main())
