"""Recovery test: is a forgotten task's accuracy spurious? Fine-tune briefly on part of its TRAIN people, score its TEST people.

The test people (Task 0's B) are never trained on in QA form; if a short fine-tune on *other*
people (half of A) brings their accuracy back, the knowledge was still in the model and only
the task alignment was broken (the paper's "spurious forgetting").

CLI: `fastfreeze recover RUN_DIR [--arm seq] [--fraction 0.5] [--num-train-epochs 1] [--learning-rate 3e-4]`
(re-uses the run's config and the arm's last checkpoint; writes RUN_DIR/recovery-ARM.json).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch


def recovery_subset(dataset, fraction: float, seed: int):
    """Rows of a deterministic random `fraction` of the people in `dataset` (all questions of each chosen person).

    Usage: `recovery_subset(task0_train, 0.5, seed=0)`. Selecting by person, not by row, keeps
    each chosen person's six questions together, as in the paper.
    """
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"fraction={fraction} must be in (0, 1].")
    people = sorted(set(dataset["person_id"]))
    g = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(people), generator=g).tolist()
    n = max(1, round(fraction * len(people)))
    chosen = {people[i] for i in order[:n]}
    return dataset.filter(lambda pid: pid in chosen, input_columns="person_id")


def main(argv: list[str]) -> int:
    from .config import ConfigError, ContinualConfig
    from .runner import Runner

    p = argparse.ArgumentParser(prog="fastfreeze recover", description=__doc__.splitlines()[0])
    p.add_argument("run_dir", help="output_dir of a finished `fastfreeze continual` / `fastfreeze demo` run")
    p.add_argument("--arm", default=None, help="strategy arm (default: the first)")
    p.add_argument("--task", type=int, default=None, help="old task to recover (default: the config's, 0)")
    p.add_argument("--fraction", type=float, default=None)
    p.add_argument("--num-train-epochs", type=float, default=None)
    p.add_argument("--learning-rate", type=float, default=None)
    a = p.parse_args(argv)
    run_dir = Path(a.run_dir)
    cfg_path = run_dir / "config.yaml"
    try:
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
        runner = Runner(cfg)
        results = runner.run()
    except ConfigError as e:
        print(f"fastfreeze recover: {e}", file=sys.stderr)
        return 2
    rec = results["arms"][arm]["recovery"]
    t = str(rec["task"])
    out = run_dir / f"recovery-{arm}.json"
    from .. import _io

    _io.write_json(out, rec, indent=2)
    print(
        f"{arm}: Task-{t} exact match {rec['before']['exact_match']:.3f} -> {rec['after'][t]['exact_match']:.3f} "
        f"after {rec['steps']} steps on {rec['train_examples']} examples of its training people; wrote {out}"
    )
    return 0
