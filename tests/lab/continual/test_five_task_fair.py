"""The five_task_fair preset (shared name words, convergence budget, as-ran arm) end to end at a toy size, and resumed."""
from __future__ import annotations

import json

from fastfreeze.lab.continual.presets import load_preset
from fastfreeze.lab.continual.runner import Runner
from fastfreeze.lab.continual.thresholds import rows_within


def test_five_task_fair_runs_end_to_end_at_toy_size_and_resumes(tmp_path):
    cfg = load_preset("five_task_fair", output_dir=str(tmp_path))
    cfg.num_tasks = 3
    cfg.model.hidden_size, cfg.model.num_attention_heads, cfg.model.intermediate_size = 16, 2, 32
    cfg.data.overrides.update(num_tasks=2, num_people_task0_train=8, num_people_task0_test=8, people_per_task=6,
                              bios_per_person=2, name_pools=[6, 6, 8])
    cfg.pretrain.training.update(num_train_epochs=1, warmup_steps=0)
    cfg.training["num_train_epochs"] = 2
    cfg.budget.update(every=1, task0_examples=12)
    results = Runner(cfg, log=lambda *_: None).run()
    arms = results["arms"]
    assert list(arms) == ["seq", "freeze1", "freeze2", "asran_freeze7"]
    seq = arms["seq"]["budget"]
    assert seq[0] is None and [b["reason"] for b in seq[1:]] == ["reference", "reference"]
    assert all(b["steps"] == 2 * 2 for b in seq[1:])  # 6 people x 6 questions = 2 batches of 32, 2 epochs
    for name in ("freeze1", "freeze2", "asran_freeze7"):
        for t, b in enumerate(arms[name]["budget"][1:], start=1):
            assert b["reason"] in ("target", "plateau", "cap"), (name, t)
            assert b["target_rows"] == rows_within(seq[t]["final_correct"], 0.02, 12)  # the reference's rows - 2 points
            assert b["steps"] <= 3 * seq[t]["steps"] and len(b["history"][0]) == 4  # step, validation, rows, task0
            assert b["validation_rows"] == 2 * 6  # 25% of 6 people rounds to 2
    assert [p["frozen_blocks"] for p in arms["asran_freeze7"]["paper_freeze"][1:]] == [[0, 1, 3], [0, 1, 3]]
    assert set(results["matched_retention"]) == {"1", "2"}
    assert set(results["matched_retention"]["1"]) == {"freeze1", "freeze2", "asran_freeze7"}
    report = (tmp_path / "report.md").read_text()
    assert "## Convergence budget" in report and "## Task-0 retention at matched later-task accuracy" in report
    # Resumed: every stage is found on disk (the budget targets come back from the reference's records).
    again = Runner(cfg, log=lambda *_: None)
    assert json.dumps(again.run()["arms"], sort_keys=True, default=str) == json.dumps(arms, sort_keys=True, default=str)
    assert again.ran == []
