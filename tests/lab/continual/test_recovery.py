"""fastfreeze.lab.continual.recovery: subsets by person, curve steps, and curve checkpoints that recover like their copies."""
from __future__ import annotations

import shutil

import pytest
import torch
from datasets import Dataset

from fastfreeze.lab.continual import build
from fastfreeze.lab.continual.evaluate import EvalSet
from fastfreeze.lab.continual.recovery import curve_points, example_subset, recovery_subset
from fastfreeze.lab.continual.trainers import make_trainer


def test_recovery_subset_takes_whole_people():
    ds = Dataset.from_dict({"person_id": [p for p in range(10) for _ in range(6)], "x": list(range(60))})
    sub = recovery_subset(ds, 0.5, seed=0)
    people = set(sub["person_id"])
    assert len(people) == 5 and len(sub) == 30
    assert recovery_subset(ds, 0.5, seed=0)["x"] == sub["x"]  # deterministic


@pytest.mark.parametrize("fraction", [0.0, 1.5])
def test_fraction_out_of_range_is_refused(fraction):
    with pytest.raises(ValueError, match=r"must be in \(0, 1\]"):
        recovery_subset(Dataset.from_dict({"person_id": [1, 2]}), fraction, seed=0)


def test_example_subset_takes_one_row_per_person_and_refuses_too_many():
    ds = Dataset.from_dict({"person_id": [p for p in range(10) for _ in range(6)], "x": list(range(60))})
    sub = example_subset(ds, 7, seed=0)
    assert len(sub) == 7 and len(set(sub["person_id"])) == 7
    assert example_subset(ds, 7, seed=0)["x"] == sub["x"]
    with pytest.raises(ValueError, match=r"n=11 must be in 1..10"):
        example_subset(ds, 11, seed=0)


def test_curve_points_scale_and_clip():
    assert curve_points([0, 10, 25, 150, "end"], 0.08, 24) == [0, 1, 2, 12, 24]
    assert curve_points([0, 150, 500, "end"], 1.0, 200) == [0, 150, 200]


def test_recovery_from_an_intermediate_checkpoint_equals_recovery_on_a_saved_copy(quick_run, tmp_path):
    """The curve's step-4 recovery (checkpoint saved during Task 1) = recovering a copy of that checkpoint,
    and that checkpoint is the model after 4 steps: a fresh Task 1 stopped at max_steps=4 has the same weights."""
    from transformers import AutoModelForCausalLM

    from fastfreeze.lab.continual.runner import Runner

    cfg, results, out = quick_run
    point = next(p for p in results["arms"]["seq"]["recovery_curve"]["points"] if p["step"] == 4)
    assert point["from"] == "trunk/task1-step4"
    assert point["after_first_token"] > 0  # quick learns little: first-token accuracy is the non-trivial number
    copy = tmp_path / "copy"
    shutil.copytree(out / "checkpoints" / "trunk" / "task1-step4", copy)
    runner = Runner(cfg, log=lambda *_: None)
    runner.device = "cpu"
    runner.data = build.prepare(cfg)
    runner.evalsets = [EvalSet(ds, runner.data.tokenizer.pad_token_id) for ds in runner.data.test]
    again = runner._recover(str(copy), "copy-recovery", save=False)
    assert again["before"]["exact_match"] == point["before"]
    assert again["after"]["0"]["exact_match"] == point["after"]
    assert again["after"]["0"]["first_token"] == point["after_first_token"]
    model = AutoModelForCausalLM.from_pretrained(str(out / "checkpoints" / "trunk" / "task0"))
    trainer = make_trainer(model, runner._args("check", {**cfg.training, "max_steps": 4}),
                           runner.data.trainable(runner.data.train[1]), runner.data.collator)
    trainer.train()
    saved = AutoModelForCausalLM.from_pretrained(str(copy)).state_dict()
    for name, value in model.state_dict().items():
        assert torch.equal(value, saved[name]), name


def test_a_repeated_standard_recovery_is_trained_once(quick_run, monkeypatch):
    """The curve's end point, the few-example table's last row and every arm's step 0 repeat a recovery from
    the same checkpoint: the runner reuses the record (recovery is deterministic: the test above)."""
    from fastfreeze.lab.continual import runner as runner_mod

    cfg, results, out = quick_run
    seq = results["arms"]["seq"]
    assert seq["recovery_curve"]["points"][-1]["after"] == seq["recovery"]["after"]["0"]["exact_match"]
    runner = runner_mod.Runner(cfg, log=lambda *_: None)
    runner.prepare()
    first = runner._recover("trunk/task0", "memo-recovery", save=False)
    monkeypatch.setattr(runner_mod, "make_trainer", lambda *a, **k: pytest.fail("trained the same recovery again"))
    again = runner._recover(str(out / "checkpoints" / "trunk" / "task0"), "memo-recovery", save=False)
    assert {**again, "from": "trunk/task0"} == first
    with pytest.raises(pytest.fail.Exception, match="trained the same recovery again"):  # other subsets train
        runner._recover("trunk/task0", "memo-recovery", subset=runner.data.train[0].select(range(6)), save=False)
