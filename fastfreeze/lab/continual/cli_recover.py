"""`fastfreeze recover RUN_DIR`: the recovery test on a finished run (is the forgotten accuracy spurious?).

Re-uses the run's config and the arm's last checkpoint; writes RUN_DIR/recovery-ARM.json.
Usage: `fastfreeze recover RUN_DIR [--arm seq] [--fraction 0.5] [--num-train-epochs 1] [--learning-rate 3e-4]`
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="fastfreeze recover", description=(
        "Recovery test: is a forgotten task's accuracy spurious? Fine-tune briefly on part of its TRAIN people, "
        "score its TEST people."))
    p.add_argument("run_dir", help="output_dir of a finished `fastfreeze continual` / `fastfreeze demo` run")
    p.add_argument("--arm", default=None, help="strategy arm (default: the first)")
    p.add_argument("--task", type=int, default=None, help="old task to recover (default: the config's, 0)")
    p.add_argument("--fraction", type=float, default=None)
    p.add_argument("--num-train-epochs", type=float, default=None)
    p.add_argument("--learning-rate", type=float, default=None)
    return p


def _config(a: argparse.Namespace):
    """The run's config with recovery enabled for one arm and the command line's overrides; (config, arm)."""
    from fastfreeze.lab.continual.config import ConfigError, ContinualConfig

    run_dir = Path(a.run_dir)
    cfg_path = run_dir / "config.yaml"
    if not cfg_path.is_file():
        raise ConfigError(f"{cfg_path} not found: pass the output_dir of a finished continual run.")
    cfg = ContinualConfig.from_yaml(cfg_path)
    cfg.output_dir = str(run_dir)
    rc = cfg.recovery
    rc.enabled = True
    if a.task is not None:
        rc.task = a.task
    if a.fraction is not None:
        rc.fraction = a.fraction
    if a.num_train_epochs is not None:
        rc.training["num_train_epochs"] = a.num_train_epochs
    if a.learning_rate is not None:
        rc.training["learning_rate"] = a.learning_rate
    arms = [s.arm for s in cfg.strategies]
    arm = a.arm or arms[0]
    if arm not in arms:
        raise ConfigError(f"--arm {arm!r} is not an arm of this run; arms are {arms}.")
    rc.arms = [arm]
    return cfg, arm


def main(argv: list[str]) -> int:
    """Exit 0 with the recovery record written, 2 on a bad run directory or option."""
    a = _parser().parse_args(argv)
    from fastfreeze import _io
    from fastfreeze.lab.continual.config import ConfigError
    from fastfreeze.lab.continual.runner import Runner

    try:
        cfg, arm = _config(a)
        results = Runner(cfg).run()
    except ConfigError as e:
        print(f"fastfreeze recover: {e}", file=sys.stderr)
        return 2
    rec = results["arms"][arm]["recovery"]
    t = str(rec["task"])
    out = Path(a.run_dir) / f"recovery-{arm}.json"
    _io.write_json(out, rec, indent=2)
    print(
        f"{arm}: Task-{t} exact match {rec['before']['exact_match']:.3f} -> {rec['after'][t]['exact_match']:.3f} "
        f"after {rec['steps']} steps on {rec['train_examples']} examples of its training people; wrote {out}"
    )
    return 0
