"""`fastfreeze continual CONFIG.yaml`: run (or resume) a continual-learning task sequence from a YAML config."""
from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path


def _one_line(e: Exception) -> str:
    text = " ".join(str(e).split())
    return text if isinstance(e, Exception) and type(e).__name__ == "ConfigError" else f"{type(e).__name__}: {text}"


def main(argv: list[str]) -> int:
    """Exit 0 with the results written, 2 on a config error. Usage: `main(["run.yaml", "--fresh"])`."""
    p = argparse.ArgumentParser(prog="fastfreeze continual", description="Run a continual-learning task sequence.")
    p.add_argument("config", help="YAML config (see fastfreeze/lab/continual/configs/*.yaml)")
    p.add_argument("--output-dir", default=None, help="override the config's output_dir")
    p.add_argument("--fresh", action="store_true", help="delete the output dir first instead of resuming")
    a = p.parse_args(argv)
    from fastfreeze.lab.continual.config import ConfigError, ContinualConfig
    from fastfreeze.lab.continual.runner import run_continual

    try:
        cfg = ContinualConfig.from_yaml(a.config)
        if a.output_dir:
            cfg.output_dir = a.output_dir
        cfg.validate()
    except (ConfigError, TypeError, ValueError) as e:  # a wrong type in the YAML surfaces as Type/ValueError
        print(f"fastfreeze continual: {a.config}: {_one_line(e)}", file=sys.stderr)
        return 2
    try:
        if a.fresh and Path(cfg.output_dir).exists():
            shutil.rmtree(cfg.output_dir)
        results = run_continual(cfg)
    except ConfigError as e:  # found once data or model are loaded (e.g. k above the model's layers)
        print(f"fastfreeze continual: {_one_line(e)}", file=sys.stderr)
        return 2
    print(f"results: {Path(cfg.output_dir) / 'results.json'}; report: {Path(cfg.output_dir) / 'report.md'}")
    for name, arm in results["arms"].items():
        m = arm["metrics"]
        print(f"  {name}: ACC={m['average_accuracy']:.3f} BWT={m['backward_transfer']} forgetting={m['forgetting']}")
    return 0
