"""Checks shared by the continual config's sections: the error type, value types, TrainingArguments keys, arms."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fastfreeze._hf_compat import training_argument_names


class ConfigError(ValueError):
    """A continual-learning config is invalid; the message names the field and the fix."""


_TYPES = {"int": (int,), "float": (int, float), "bool": (bool,), "str": (str,), "dict": (dict,), "list": (list,),
          "None": (type(None),)}


def _type_ok(value: Any, annotation: str) -> bool:
    """Whether a YAML value fits a field's simple annotation ("int", "float | None", ...); others pass."""
    allowed = []
    for name in (part.strip() for part in annotation.split("|")):
        if name not in _TYPES:
            return True  # Any, a dataclass section or a generic: checked elsewhere
        allowed += _TYPES[name]
    if isinstance(value, bool) and bool not in allowed:
        return False  # YAML `yes` is not a count
    return isinstance(value, tuple(allowed))


@dataclass
class EarlyStopConfig:
    """Early stopping of each later task, chosen on a validation split of that task's TRAINING people only.

    Every `every` steps the arm scores `fraction` of the task's training people (all their questions);
    it stops at the first check whose exact match is >= `target`, or after `patience` checks without a
    gain. The task's test split is never read (tests/lab/continual/test_early_stop.py asserts it).
    """

    every: int = 5
    target: float = 0.95
    patience: int = 3
    fraction: float = 0.2

    def validate(self, arm: str) -> None:
        if self.every < 1 or self.patience < 1:
            raise ConfigError(f"strategy {arm}: early_stop.every and early_stop.patience must be >= 1.")
        if not 0.0 < self.target <= 1.0 or not 0.0 < self.fraction <= 1.0:
            raise ConfigError(f"strategy {arm}: early_stop.target and early_stop.fraction must be in (0, 1].")


@dataclass
class BudgetConfig:
    """Per-arm convergence budget for every later task (the `budget:` section; see docs/continual.md).

    The `reference` arm (SEQ) trains each later task for the configured epochs; its exact match on a
    validation split (`fraction` of that task's TRAINING people) at the end is the target. Every other
    arm trains the task until, checked every `every` steps on the same split, it reaches target - `margin`
    ("target"), or gains less than `min_delta` over its best for `patience` checks after at least
    `min_factor` x the reference's steps ("plateau"), or has trained `cap` x the reference's epochs ("cap").
    `track_task0`: also score Task 0's test people at each check (measurement only, for the matched-accuracy
    retention table; the stopping choice reads the validation split alone).
    """

    reference: str = "seq"
    margin: float = 0.02
    cap: float = 3.0
    every: int = 10
    patience: int = 4
    min_delta: float = 0.005
    min_factor: float = 1.0
    fraction: float = 0.2
    track_task0: bool = True
    task0_examples: int | None = None  # subsample Task 0's test rows for the tracking (None = all)

    def validate(self, labels: list, strategies: list = (), training: dict | None = None) -> None:
        """Check the fields against the run's arm labels, its strategies and its `training:` kwargs."""
        if self.reference not in labels:
            raise ConfigError(f"budget.reference={self.reference!r} is not an arm of this run; arms are {labels}.")
        if labels[0] != self.reference:
            raise ConfigError(f"budget.reference={self.reference!r} must be the first arm (its targets come first).")
        if self.every < 1 or self.patience < 1:
            raise ConfigError("budget.every and budget.patience must be >= 1.")
        if not 0.0 <= self.margin < 1.0 or not 0.0 < self.fraction <= 1.0 or self.min_delta < 0:
            raise ConfigError("budget: margin must be in [0, 1), fraction in (0, 1], min_delta >= 0.")
        if self.cap < 1.0 or not 0.0 <= self.min_factor <= self.cap:
            raise ConfigError("budget: cap must be >= 1 and min_factor in [0, cap].")
        if any(s.early_stop is not None for s in strategies):
            raise ConfigError("budget: the convergence budget replaces per-arm early_stop; drop `early_stop`.")
        # A cap of 3x the epochs would stretch a decaying schedule: budgeted arms must see the reference's lr.
        training = training or {}
        if training.get("lr_scheduler_type") not in ("constant", "constant_with_warmup") or \
                training.get("max_steps", -1) > 0:
            raise ConfigError("budget: set training.lr_scheduler_type to constant (or constant_with_warmup) and "
                              "no max_steps, so a longer budget does not change the learning rate.")


# Keys the runner owns; users set them through other config fields (or not at all).
_RUNNER_OWNED = {"output_dir"}


def check_training_kwargs(kwargs: dict, where: str) -> None:
    """Reject keys that TrainingArguments does not know, naming the closest fix."""
    if not isinstance(kwargs, dict):
        raise ConfigError(f"{where}: expected a mapping of TrainingArguments fields, got {kwargs!r}.")
    valid = training_argument_names()
    unknown = sorted(k for k in kwargs if k not in valid)
    if unknown:
        raise ConfigError(f"{where}: {unknown} are not TrainingArguments fields (HF names, e.g. learning_rate).")
    owned = sorted(k for k in kwargs if k in _RUNNER_OWNED)
    if owned:
        raise ConfigError(f"{where}: {owned} is set by the runner; set the top-level output_dir instead.")


def _check_patterns(name: str, patterns: Any, from_task: int, num_tasks: int) -> None:
    """A paper_freeze arm's substring list (and no `patterns` on any other arm)."""
    if name != "paper_freeze":
        if patterns is not None:
            raise ConfigError(f"strategy {name}: `patterns` is for paper_freeze only.")
        return
    if not isinstance(patterns, list) or not patterns or any(not isinstance(p, str) or not p for p in patterns):
        raise ConfigError(f"strategy paper_freeze: patterns={patterns!r}; give a non-empty list of "
                          "parameter-name substrings, e.g. [embed_tokens, layers.0, layers.1].")
    if not 0 <= from_task < num_tasks:
        raise ConfigError(f"strategy paper_freeze: from_task={from_task} must be in 0..{num_tasks - 1}.")


def _check_arms(arms, labels, where):
    if arms is None:
        return
    missing = [a for a in arms if a not in labels]
    if missing:
        raise ConfigError(f"{where}: {missing} are not arms of this run; arms are {labels}.")


def _check_recovery_curve(rec: Any, num_tasks: int) -> None:  # rec: config.RecoveryConfig (imports this module)
    if rec.curve_steps is None and rec.few_examples is None:
        return
    if not 1 <= rec.curve_task < num_tasks or rec.curve_task <= rec.task:
        raise ConfigError(f"recovery.curve_task={rec.curve_task}: use a task after recovery.task, < num_tasks.")
    for s in rec.curve_steps or []:
        if s != "end" and (isinstance(s, bool) or not isinstance(s, int) or s < 0):
            raise ConfigError(f"recovery.curve_steps: {s!r} is not a step; use ints >= 0 or 'end'.")
    for n in rec.few_examples or []:
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ConfigError(f"recovery.few_examples: {n!r} is not a count; use ints >= 1, e.g. [10, 100].")
    if rec.step_scale <= 0 or rec.few_from_step < 0 or rec.few_max_steps < 1:
        raise ConfigError("recovery: step_scale must be > 0, few_from_step >= 0 and few_max_steps >= 1.")


def check_recovery(rec, num_tasks: int, labels: list[str]) -> None:
    """The `recovery:` section against the run: an old task, a fraction in (0, 1], known arms, a valid curve."""
    if not rec.enabled:
        return
    if not 0 <= rec.task < num_tasks - 1:
        raise ConfigError(
            f"recovery.task={rec.task}: must be an old task, in 0..{num_tasks - 2} (or set recovery.enabled: false)."
        )
    if not 0.0 < rec.fraction <= 1.0:
        raise ConfigError(f"recovery.fraction={rec.fraction} must be in (0, 1].")
    _check_arms(rec.arms, labels, "recovery.arms")
    _check_recovery_curve(rec, num_tasks)


def check_orthogonality(orth, num_tasks: int, labels: list[str]) -> None:
    """The `orthogonality:` section against the run: a later task, a positive boundary, energy in (0, 1]."""
    if not orth.enabled:
        return
    if not 1 <= orth.task < num_tasks:
        raise ConfigError(
            f"orthogonality.task={orth.task}: must be a later task, in 1..{num_tasks - 1} "
            "(or set orthogonality.enabled: false)."
        )
    if orth.boundary_step <= 0 or not 0.0 < orth.energy <= 1.0:
        raise ConfigError("orthogonality: boundary_step must be > 0 and energy in (0, 1].")
    _check_arms(orth.arms, labels, "orthogonality.arms")


def saved_num_layers(path: str) -> int | None:
    """`num_hidden_layers` from a save_pretrained folder's config.json; None when unreadable (checked again once loaded)."""
    try:
        return int(json.loads((Path(path) / "config.json").read_text())["num_hidden_layers"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
