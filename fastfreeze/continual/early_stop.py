"""Freeze + early stop: end each later task at a step chosen on a validation split of its TRAINING people.

The paper's best Biography arm freezes the bottom layers and stops each later task early: once the new
task is learned, further steps only add interference with the old ones. The stopping step is chosen
here on `validation_split(task_train, fraction)` (whole training people, all their questions); the
task's test split never reaches this module (tests/continual/test_early_stop.py poisons it to check).
"""
from __future__ import annotations

from transformers import TrainerCallback

from .evaluate import EvalSet, evaluate
from .recovery import recovery_subset


def validation_split(train_ds, fraction: float, seed: int, pad_token_id: int) -> EvalSet:
    """An EvalSet of `fraction` of the people of a task's training split (deterministic by `seed`)."""
    return EvalSet(recovery_subset(train_ds, fraction, seed), pad_token_id)


class EarlyStopCallback(TrainerCallback):
    """Scores `evalset` every `every` steps; stops at exact match >= `target` or after `patience` flat checks.

    Usage: `cb = EarlyStopCallback(validation_split(...), EarlyStopConfig())`; after training,
    `cb.stopped_at` is the chosen step (None: ran to the end) and `cb.history` the validation curve.
    """

    def __init__(self, evalset: EvalSet, cfg, batch_size: int = 256):
        self.evalset, self.cfg, self.batch_size = evalset, cfg, batch_size
        self.history: list[dict] = []
        self.best = -1.0
        self.flat = 0
        self.stopped_at: int | None = None

    def on_step_end(self, args, state, control, model=None, **kwargs):
        step = state.global_step
        if step % self.cfg.every:
            return
        em = evaluate(model, self.evalset, self.batch_size)["exact_match"]
        self.history.append({"step": step, "exact_match": em})
        if em > self.best:
            self.best, self.flat = em, 0
        else:
            self.flat += 1
        if em >= self.cfg.target or self.flat >= self.cfg.patience:
            self.stopped_at = step
            control.should_training_stop = True

    def record(self) -> dict:
        return {"stopped_at": self.stopped_at, "validation": self.history, "validation_rows": len(self.evalset)}


def early_stopper(runner, strat, t: int, freeze: bool) -> EarlyStopCallback | None:
    """The runner's early-stop callback for task `t` of arm `strat`: built from `runner.data.train[t]` only."""
    es = strat.stopping
    if es is None or t < 1 or (strat.name == "freeze" and not freeze):
        return None
    data = runner.data
    val = validation_split(data.train[t], es.fraction, runner.cfg.seed + t, data.tokenizer.pad_token_id)
    return EarlyStopCallback(val, es, runner.cfg.evaluation.batch_size)
