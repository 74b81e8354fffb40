"""The per-arm convergence budget: stops at target, at plateau (not before SEQ's steps), at the cap; its config checks."""
from __future__ import annotations

import pytest

import torch

import fastfreeze.lab.continual.early_stop as es_mod
from fastfreeze.lab.continual.config import BudgetConfig, ConfigError, ContinualConfig
from fastfreeze.lab.continual.early_stop import BudgetCallback
from fastfreeze.lab.continual.presets import load_preset
from fastfreeze.lab.continual.thresholds import rows_needed, rows_within


class _State:
    def __init__(self, step):
        self.global_step, self.epoch = step, step / 10


class _Control:
    should_training_stop = False


ROWS = 200  # validation rows of the fake checks: every score below is a whole number of rows


def _check(score: float, rows: int = ROWS) -> dict:
    """What evaluate() returns for a check with `score` of `rows` right: the float32 mean and the count."""
    correct = round(score * rows)
    mean = torch.tensor([1.0] * correct + [0.0] * (rows - correct)).mean().item()
    return {"exact_match": mean, "correct": correct, "n": rows}


def _train(monkeypatch, scores, target, min_steps=0, max_steps=100, rows=ROWS, **cfg):
    """Drive a BudgetCallback through `max_steps` steps with validation scores `scores` (one per check);
    `target` is a fraction (turned into rows as the runner does) or None (the reference)."""
    it = iter(scores)
    monkeypatch.setattr(es_mod, "evaluate", lambda model, evalset, bs: _check(next(it), rows))
    cb = BudgetCallback([0] * rows, BudgetConfig(**{"every": 5, "patience": 2, "min_delta": 0.01, **cfg}),
                        None if target is None else rows_needed(target, rows), min_steps=min_steps)
    control, step = _Control(), 0
    for step in range(1, max_steps + 1):
        cb.on_step_end(None, _State(step), control)
        if control.should_training_stop:
            break
    cb.on_train_end(None, _State(step), control)
    return cb


def test_stops_at_the_target(monkeypatch):
    cb = _train(monkeypatch, [0.2, 0.5, 0.88, 0.95], target=0.88)
    assert (cb.reason, cb.steps, cb.epochs) == ("target", 15, 1.5)
    assert cb.record()["final_correct"] == 176 and len(cb.history) == 3  # no extra check at the stop


def test_stops_at_a_plateau_but_not_before_min_steps(monkeypatch):
    flat = [0.3, 0.6, 0.6, 0.605, 0.6, 0.6, 0.6]
    assert _train(monkeypatch, flat, target=0.9).steps == 20  # 0.6 at 10, no gain >= 0.01 at 15 and 20
    cb = _train(monkeypatch, flat, target=0.9, min_steps=30)
    assert (cb.reason, cb.steps) == ("plateau", 30)  # the same curve, held to the reference's 30 steps


def test_runs_to_the_cap_and_scores_the_last_step(monkeypatch):
    rising = [0.1 * i for i in range(1, 9)] + [0.85]  # 8 checks by step 40, then the end-of-training check
    cb = _train(monkeypatch, rising, target=0.9, max_steps=42)
    assert (cb.reason, cb.steps) == ("cap", 42)
    assert cb.history[-1] == {"step": 42, **{k: v for k, v in _check(0.85).items() if k != "n"}}


def test_the_target_two_points_below_the_reference_stops_at_exactly_those_rows(monkeypatch):
    # The reference ended at 120 of 150 (80%); the arm must reach 78% = 117 rows. The float32 mean of 117/150
    # is below 0.8 - 0.02, so the float compare ran on to the next check.
    target = rows_within(120, 0.02, 150)
    it = iter([0.5, 116 / 150, 117 / 150, 0.9])
    monkeypatch.setattr(es_mod, "evaluate", lambda model, evalset, bs: _check(next(it), 150))
    cb = BudgetCallback([0] * 150, BudgetConfig(every=5, patience=9), target)
    control = _Control()
    for step in range(1, 21):
        cb.on_step_end(None, _State(step), control)
        if control.should_training_stop:
            break
    cb.on_train_end(None, _State(step), control)
    assert (target, cb.reason, cb.steps) == (117, "target", 15)
    assert cb.history[-1]["exact_match"] < 0.8 - 0.02


def test_the_reference_only_records(monkeypatch):
    cb = _train(monkeypatch, [0.99] * 9, target=None, max_steps=40)
    assert (cb.reason, cb.steps, len(cb.history)) == ("reference", 40, 8)


def test_budget_config_is_checked(tmp_path):
    cfg = load_preset("five_task_fair", output_dir=str(tmp_path))
    assert cfg.budget_config.cap == 3.0 and cfg.strategies[0].arm == "seq"
    data = cfg.to_dict()
    bad = dict(data, strategies=data["strategies"][1:] + data["strategies"][:1])
    with pytest.raises(ConfigError, match="must be the first arm"):
        ContinualConfig.from_dict(bad).validate()
    bad = dict(data, training={**data["training"], "lr_scheduler_type": "cosine"})
    with pytest.raises(ConfigError, match="constant"):
        ContinualConfig.from_dict(bad).validate()
    bad = dict(data, budget={"cap": 0.5})
    with pytest.raises(ConfigError, match="cap must be >= 1"):
        ContinualConfig.from_dict(bad).validate()
    bad = dict(data, strategies=[*data["strategies"][:1], {"name": "freeze", "num_frozen_layers": 1, "early_stop": {}}])
    with pytest.raises(ConfigError, match="replaces per-arm early_stop"):
        ContinualConfig.from_dict(bad).validate()
