"""fastfreeze.lab.continual.early_stop: the stopping step is chosen on training people only; the test split is never read."""
from __future__ import annotations

import shutil

import torch

from fastfreeze.lab.continual import build
from fastfreeze.lab.continual.config import EarlyStopConfig, StrategyConfig
from fastfreeze.lab.continual.early_stop import EarlyStopCallback
from fastfreeze.lab.continual.presets import load_preset
from fastfreeze.lab.continual.runner import Runner


class PoisonedSplit:
    """A test split that fails the test the moment anything reads it."""

    def __getattr__(self, name):
        raise AssertionError(f"the early-stop choice read a test split ({name!r})")

    def __getitem__(self, key):
        raise AssertionError(f"the early-stop choice read a test split ([{key!r}])")

    def __len__(self):
        raise AssertionError("the early-stop choice read a test split (len)")


def test_early_stop_never_reads_a_test_split(quick_run, tmp_path):
    _, _, out = quick_run
    shutil.copytree(out, tmp_path / "run")  # its data and trunk/task0 checkpoint, built the ordinary way
    cfg = load_preset("quick", output_dir=str(tmp_path / "run"))
    es = StrategyConfig(name="freeze", num_frozen_layers=1, early_stop={"every": 2, "target": 1.0, "patience": 2})
    cfg.strategies = [es]
    runner = Runner(cfg, log=lambda *_: None)
    runner.device = "cpu"
    runner.data = build.prepare(cfg)
    runner.evalsets = [PoisonedSplit() for _ in runner.data.test]
    runner.data.test = [PoisonedSplit() for _ in runner.data.test]  # the dense callback reads data.test[0]
    runner.cfg.evaluation.dense_until = 0
    runner.cfg.evaluation.dense_task = 99  # no dense evaluation of Task 0 in this task
    runner._eval_tasks = lambda model, upto: {}  # the post-task scoring (legitimately on test) is not the choice
    record = runner._train_task(es, 1, "trunk/task0", "freeze1_es/task1", shared=False, orth_on=False)
    stop = record["early_stop"]
    assert stop["validation"] and stop["validation_rows"] == 8 * 6  # 20% of Task 1's 40 people, 6 questions each
    assert stop["stopped_at"] in (None, record["steps"])


class _FakeState:
    def __init__(self, step):
        self.global_step = step


class _Control:
    should_training_stop = False


def test_callback_stops_at_target_or_after_patience(monkeypatch):
    import fastfreeze.lab.continual.early_stop as mod

    scores = iter([0.2, 0.5, 0.5, 0.5, 0.9])
    monkeypatch.setattr(mod, "evaluate",
                        lambda model, evalset, bs: {"exact_match": (s := next(scores)), "correct": round(s * 10), "n": 10})
    cb = EarlyStopCallback([0] * 10, EarlyStopConfig(every=5, target=0.8, patience=2))
    control = _Control()
    for step in range(1, 26):
        cb.on_step_end(None, _FakeState(step), control)
        if control.should_training_stop:
            break
    assert cb.stopped_at == 20  # 0.5 at 10, flat at 15 and 20: patience 2 reached before the 0.9
    assert [h["step"] for h in cb.history] == [5, 10, 15, 20]


def test_callback_stops_at_exactly_the_target_rows(monkeypatch):
    """14 of 20 right reaches a 0.7 target (counts), though its float32 mean is 0.69999999."""
    import fastfreeze.lab.continual.early_stop as mod

    counts = iter([10, 14, 20])
    monkeypatch.setattr(mod, "evaluate", lambda model, evalset, bs: (
        lambda c: {"exact_match": torch.tensor([1.0] * c + [0.0] * (20 - c)).mean().item(), "correct": c, "n": 20}
    )(next(counts)))
    cb = EarlyStopCallback([0] * 20, EarlyStopConfig(every=1, target=0.7, patience=9))
    control = _Control()
    for step in range(1, 4):
        cb.on_step_end(None, _FakeState(step), control)
        if control.should_training_stop:
            break
    assert cb.stopped_at == 2 and cb.history[-1]["exact_match"] < 0.7
