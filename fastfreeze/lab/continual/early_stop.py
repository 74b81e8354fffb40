"""Freeze + early stop: end each later task at a step chosen on a validation split of its TRAINING people.

The paper's best Biography arm freezes the bottom layers and stops each later task early: once the new
task is learned, further steps only add interference with the old ones. The stopping step is chosen
here on `validation_split(task_train, fraction)` (whole training people, all their questions); the
task's test split never reaches this module (tests/lab/continual/test_early_stop.py poisons it to check).
"""
from __future__ import annotations

from transformers import TrainerCallback

from fastfreeze.lab.continual.evaluate import EvalSet, evaluate
from fastfreeze.lab.continual.recovery import recovery_subset
from fastfreeze.lab.continual.thresholds import reaches, rows_needed, rows_within


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
        r = evaluate(model, self.evalset, self.batch_size)
        self.history.append({"step": step, "exact_match": r["exact_match"], "correct": r["correct"]})
        if r["correct"] > self.best:
            self.best, self.flat = r["correct"], 0
        else:
            self.flat += 1
        if reaches(r["correct"], r["n"], self.cfg.target) or self.flat >= self.cfg.patience:
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


class BudgetCallback(TrainerCallback):
    """The convergence budget of one later task (config_checks.BudgetConfig), or the reference's observation.

    Every `cfg.every` steps: exact match on `evalset` (training people only) and, if `task0` is given,
    on Task 0's test people (recorded, never used to stop). With `target_rows` None (the reference arm) it
    only records. Otherwise it stops once `target_rows` rows are right ("target"), or after `cfg.patience`
    checks without a gain of `cfg.min_delta` (in rows: thresholds.rows_needed) once `min_steps` are done
    ("plateau"); running to the end is "cap". Counts, not float means (fastfreeze.lab.continual.thresholds).
    Usage: `cb = BudgetCallback(val, BudgetConfig(), target_rows=117, min_steps=100)`; then `cb.record()`.
    """

    def __init__(self, evalset: EvalSet, cfg, target_rows: int | None, min_steps: int = 0,
                 task0: EvalSet | None = None, batch_size: int = 256):
        self.evalset, self.cfg, self.target_rows, self.min_steps = evalset, cfg, target_rows, min_steps
        self.task0, self.batch_size = task0, batch_size
        self.history: list[dict] = []
        self.best, self.flat = -1.0, 0
        self.reason: str | None = None
        self.epochs: float | None = None
        self.steps: int | None = None

    def _check(self, step: int, model) -> tuple[int, int]:
        r = evaluate(model, self.evalset, self.batch_size)
        point = {"step": step, "exact_match": r["exact_match"], "correct": r["correct"]}
        if self.task0 is not None:
            point["task0"] = evaluate(model, self.task0, self.batch_size)["exact_match"]
        self.history.append(point)
        return r["correct"], r["n"]

    def on_step_end(self, args, state, control, model=None, **kwargs):
        step = state.global_step
        if step % self.cfg.every:
            return
        correct, n = self._check(step, model)
        if self.target_rows is None:
            return
        if correct >= self.best + rows_needed(self.cfg.min_delta, n):
            self.flat = 0
        else:
            self.flat += 1
        self.best = max(self.best, correct)
        if correct >= self.target_rows:
            self.reason = "target"
        elif self.flat >= self.cfg.patience and step >= self.min_steps:
            self.reason = "plateau"
        if self.reason:
            control.should_training_stop = True

    def on_train_end(self, args, state, control, model=None, **kwargs):
        if not self.history or self.history[-1]["step"] != state.global_step:
            self._check(state.global_step, model)  # the state the stage ends in, scored like every check
        self.reason = self.reason or ("reference" if self.target_rows is None else "cap")
        self.epochs = state.epoch
        self.steps = state.global_step

    def record(self) -> dict:
        return {"reason": self.reason, "steps": self.steps, "epochs": self.epochs, "target_rows": self.target_rows,
                "min_steps": self.min_steps, "final_validation": self.history[-1]["exact_match"],
                "final_correct": self.history[-1]["correct"], "history": self.history,
                "validation_rows": len(self.evalset)}


def final_correct(record: dict) -> int:
    """The right rows at the end of a budget record; a record cached before counts were kept (2026-12-07) has
    only the mean, times the rows, an integer up to float32 rounding (one attribute group per person)."""
    if "final_correct" in record:
        return record["final_correct"]
    return round(record["final_validation"] * record["validation_rows"])


def budget_callback(runner, strat, t: int, shared: bool) -> tuple[BudgetCallback | None, dict]:
    """The budget callback of arm `strat` on task `t` and its TrainingArguments overrides ({} if none).

    The reference arm (shared SEQ stages) records; every other arm, on a task it trains differently from
    SEQ, is budgeted against the reference's target for `t` (runner.budget_targets, set as it ran).
    """
    cfg = runner.cfg
    bud = cfg.budget_config
    if bud is None or t < 1:
        return None, {}
    reference = strat.arm == bud.reference and shared
    if not reference and shared:
        return None, {}  # a SEQ-like stage of another arm: it is the reference's own stage
    data = runner.data
    val = validation_split(data.train[t], bud.fraction, cfg.seed + t, data.tokenizer.pad_token_id)
    task0 = None
    if bud.track_task0:
        task0 = EvalSet(data.test[0], data.tokenizer.pad_token_id, bud.task0_examples, cfg.seed)
    if reference:
        return BudgetCallback(val, bud, None, task0=task0, batch_size=cfg.evaluation.batch_size), {}
    ref_correct, ref_steps = runner.budget_targets[t]  # the same validation rows: the reference's right ones
    epochs = cfg.training.get("num_train_epochs", 3.0)
    cb = BudgetCallback(val, bud, rows_within(ref_correct, bud.margin, len(val)),
                        min_steps=round(bud.min_factor * ref_steps), task0=task0, batch_size=cfg.evaluation.batch_size)
    return cb, {"num_train_epochs": bud.cap * epochs}
