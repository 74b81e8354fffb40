"""Command-line entry point: `fastfreeze demo | continual | recover | orthogonality | suggest-k | verify | safety | sft | estimate`."""
from __future__ import annotations

import importlib
import sys

# Each subcommand is one small module exposing `main(argv) -> int`, which parses its options and then
# calls the code: the library's commands live in this package, the lab's beside their experiment
# (`fastfreeze.lab.<experiment>.cli*`). This table is the only place that knows them, by name: imports
# happen lazily, so `fastfreeze --help` stays fast and the library imports no lab module.
SUBCOMMANDS = {
    "demo": ("fastfreeze.lab.continual.cli_demo", "Run the tiny Biography experiment (SEQ vs Freeze vs recovery) on CPU."),
    "continual": ("fastfreeze.lab.continual.cli", "Run a continual-learning task sequence from a YAML config."),
    "recover": ("fastfreeze.lab.continual.cli_recover", "Recovery test: is forgotten accuracy spurious (recoverable)?"),
    "orthogonality": ("fastfreeze.lab.continual.cli_orthogonality", "Per-layer update orthogonality between two windows."),
    "suggest-k": ("fastfreeze.lab.suggest.cli", "Probe the next task with each depth frozen: the evidence per k (no single k: docs/suggest-k.md)."),
    "verify": ("fastfreeze.cli.verify", "Prove parity with plain PyTorch freezing on your model and data."),
    "safety": ("fastfreeze.lab.safety.cli", "Refusal-rate evaluation and the safety scenario."),
    "sft": ("fastfreeze.cli.sft", "TRL's `trl sft` with the bottom k layers frozen and cached (flags / YAML as TRL's)."),
    "estimate": ("fastfreeze.cli.estimate", "Predict params, step time, memory, cache size and whether the cache pays."),
}


def _usage() -> str:
    lines = ["usage: fastfreeze <command> [options]", "", "commands:"]
    for name, (_, help_text) in SUBCOMMANDS.items():
        lines.append(f"  {name:<14}{help_text}")
    lines.append("")
    lines.append("Run `fastfreeze <command> --help` for the options of one command.")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(_usage())
        return 0
    name, rest = argv[0], argv[1:]
    if name not in SUBCOMMANDS:
        print(f"fastfreeze: unknown command {name!r}.\n\n{_usage()}", file=sys.stderr)
        return 2
    module = importlib.import_module(SUBCOMMANDS[name][0])
    return int(module.main(rest) or 0)
