"""`fastfreeze suggest-k RUN_DIR`: probe the next task with each depth frozen; the evidence per k, the rule's measured hit rate, no single k.

Usage:
    fastfreeze suggest-k runs/demo                               # Task-0 checkpoint -> Task 1
    fastfreeze suggest-k runs/demo --compare runs/demo/results.json
    fastfreeze suggest-k --model CKPT --data DSD_DIR --tokenizer TOK_DIR --new-task 1
    fastfreeze suggest-k --suggestion suggest_k-task1.json --compare other_run/results.json   # no probe
    fastfreeze suggest-k --suggestion suggest_k-task1.json --learn-min 0.8          # the rule, other threshold
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="fastfreeze suggest-k", description=(
        "Before training the next task: a short probe on it from the model that learned the previous task, "
        "with nothing frozen and with the embedding + bottom k blocks frozen for k = 0..L; prints per-layer "
        "update sizes, their orthogonality to the previous task's update, the old task's first-token accuracy "
        "after the probe per k, and the measured hit rate of the one rule tried (0/3 at matched budgets, so no single "
        "k is suggested: docs/suggest-k.md)."))
    p.add_argument("run_dir", nargs="?", help="output_dir of a `fastfreeze continual` / `fastfreeze demo` run")
    p.add_argument("--model", help="checkpoint that has learned the old task (default: RUN_DIR's trunk/task{N-1})")
    p.add_argument("--previous", help="checkpoint before that task, for the orthogonality columns (default: "
                   "RUN_DIR's pretrain or trunk/task{N-2}; without it the columns are empty)")
    p.add_argument("--data", help="DatasetDict folder with task{i}_train / task{i}_test (default: RUN_DIR's data-*)")
    p.add_argument("--tokenizer", help="tokenizer folder (default: RUN_DIR's tokenizer-*)")
    p.add_argument("--new-task", type=int, default=1, help="the task about to be trained (default 1)")
    p.add_argument("--old-task", type=int, default=None, help="the task to protect (default: new-task - 1)")
    p.add_argument("--old-split", choices=("train", "test"), default="train",
                   help="old-task rows scored after the probe (default train: no test row is read)")
    p.add_argument("--steps", type=int, default=50, help="probe steps per depth (default 50)")
    p.add_argument("--learning-rate", type=float, default=None, help="default: the run's training rate, else 3e-4")
    p.add_argument("--batch-size", type=int, default=None, help="default: the run's batch size, else 32")
    p.add_argument("--eval-examples", type=int, default=600, help="rows scored per task (0 = all)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--learn-min", type=float, default=None, help="the rule's learning threshold (default 0.8)")
    p.add_argument("--tie", type=float, default=None, help="the rule's retention tie, as a fraction (default 0.02)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--output", help="JSON path (default: RUN_DIR/suggest_k-task{N}.json; without RUN_DIR none)")
    p.add_argument("--compare", metavar="RESULTS_JSON", help="a run's results.json: is the rule's pick among its best arms? "
                   "(how its hit rate is measured)")
    p.add_argument("--suggestion", metavar="SUGGEST_JSON", help="reuse this suggest-k JSON instead of probing "
                   "(with --learn-min / --tie: re-apply the rule to its probe)")
    return p


def _settings(a, training: dict):
    from fastfreeze.lab.suggest import ProbeSettings

    return ProbeSettings(
        steps=a.steps,
        learning_rate=a.learning_rate or float(training.get("learning_rate", 3e-4)),
        batch_size=a.batch_size or int(training.get("per_device_train_batch_size", 32)),
        weight_decay=float(training.get("weight_decay", 0.0)),
        max_grad_norm=float(training.get("max_grad_norm", 1.0)) or None,
        seed=a.seed,
        eval_examples=a.eval_examples or None,
    )


def _probe(a) -> tuple[dict, Path | None]:
    from fastfreeze.lab.suggest import LEARN_MIN, TIE, resolve, suggest_k

    inp = resolve(a.run_dir, a.model, a.previous, a.data, a.tokenizer, a.old_task, a.new_task)
    settings = _settings(a, inp.training)
    settings.check()
    result = suggest_k(inp, settings, a.old_split, LEARN_MIN if a.learn_min is None else a.learn_min,
                       TIE if a.tie is None else a.tie, log=lambda m: print(m, file=sys.stderr))
    out = Path(a.output) if a.output else (Path(a.run_dir) / f"suggest_k-task{a.new_task}.json" if a.run_dir else None)
    return result, out


def _load_json(path: str, what: str, flag: str) -> dict:
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"{flag} {path!r} is not a file; pass {what}.")
    try:
        return json.loads(p.read_text())
    except json.JSONDecodeError as e:
        raise FileNotFoundError(f"{flag} {path!r} is not JSON ({e.msg}); pass {what}.") from None


def main(argv: list[str]) -> int:
    """Exit 0 with the table printed (and the JSON written), 2 on bad input with the fix named.

    Usage: `main(["runs/demo", "--steps", "50", "--output", "out/suggest.json"])`.
    """
    a = _parser().parse_args(argv)
    if a.threads:
        import torch

        torch.set_num_threads(a.threads)
    from fastfreeze import _io
    from fastfreeze.lab.continual.config import ConfigError
    from fastfreeze.lab.suggest import compare, markdown

    try:
        if a.suggestion:
            result, out = _load_json(a.suggestion, "a JSON written by fastfreeze suggest-k", "--suggestion"), None
            if "suggestion" not in result or "probe" not in result:
                raise ConfigError(f"--suggestion {a.suggestion!r} has no 'probe'/'suggestion' entry; pass a "
                                  "suggest-k JSON.")
            # Re-read the stored probe with this version's evidence (older files named a k) and any new thresholds.
            from fastfreeze.lab.suggest import LEARN_MIN, TIE, suggest

            old = result["suggestion"]
            result["suggestion"] = suggest(result["probe"],
                                           old.get("learn_min", LEARN_MIN) if a.learn_min is None else a.learn_min,
                                           old.get("tie", TIE) if a.tie is None else a.tie)
            out = Path(a.output) if a.output else None
        else:
            result, out = _probe(a)
        print(markdown(result))
        if a.compare:
            res = _load_json(a.compare, "a continual run's results.json", "--compare")
            if "arms" not in res:
                raise ConfigError(f"--compare {a.compare!r} has no 'arms': pass a continual run's results.json.")
            cmp = compare.compare(result["suggestion"]["rule_k"], res)  # measures the rule; no k is suggested
            cmp["results"] = str(a.compare)
            result["comparison"] = cmp
            print("\nAgainst the arms of " + a.compare + ":\n\n" + compare.markdown(cmp))
    except (ConfigError, FileNotFoundError, ValueError) as e:
        print(f"fastfreeze suggest-k: {e}", file=sys.stderr)
        return 2
    if out is not None:
        _io.write_json(out, result, indent=2)
        print(f"\nwrote {out}")
    return 0
