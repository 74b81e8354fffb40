"""`fastfreeze orthogonality W0 W1 W2`: per-layer update orthogonality between two windows, from three checkpoints."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path


def main(argv: list[str]) -> int:
    """The table for three save_pretrained checkpoints of one model (window start, boundary, end); exit 2
    on a bad path. Usage: `main(["ckpt0", "ckpt150", "ckpt300", "--output-dir", "out"])`."""
    p = argparse.ArgumentParser(prog="fastfreeze orthogonality", description=(
        "Update orthogonality: principal angles between the weight updates of two training windows, per layer "
        "and component."))
    p.add_argument("checkpoints", nargs=3, help="save_pretrained folders: window start, boundary, end")
    p.add_argument("--energy", type=float, default=0.99)
    p.add_argument("--output-dir", default=None, help="write orthogonality.json and orthogonality.png here")
    a = p.parse_args(argv)
    for c in a.checkpoints:
        if not Path(c).is_dir():
            print(f"fastfreeze orthogonality: {c!r} is not a checkpoint folder (save_pretrained output).", file=sys.stderr)
            return 2
    from transformers import AutoModelForCausalLM

    from fastfreeze import _io
    from fastfreeze.lab.continual.diagnostics import layer_summary, snapshot, update_orthogonality
    from fastfreeze.lab.continual.report import markdown_table

    snaps = [snapshot(AutoModelForCausalLM.from_pretrained(c)) for c in a.checkpoints]
    rows = update_orthogonality(*snaps, energy=a.energy)
    result = {"energy": a.energy, "rows": rows, "per_layer": layer_summary(rows), "checkpoints": a.checkpoints}
    print(markdown_table(result))
    if a.output_dir:
        from fastfreeze.lab.continual.plots import plot_orthogonality  # matplotlib: only when a plot is asked for

        out = Path(a.output_dir)
        out.mkdir(parents=True, exist_ok=True)
        _io.write_json(out / "orthogonality.json", result, indent=2)
        plot_orthogonality({"checkpoints": {"orthogonality": result}}, out / "orthogonality.png")
        print(f"wrote {out / 'orthogonality.json'} and {out / 'orthogonality.png'}")
    return 0
