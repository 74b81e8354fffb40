"""The five_task preset (Task 0 + 5 tasks, seven arms incl. Freeze + early stop) end to end at a toy size."""
from __future__ import annotations

import json

from fastfreeze.lab.continual.presets import load_preset
from fastfreeze.lab.continual.runner import run_continual


def test_five_task_preset_runs_end_to_end_at_toy_size(tmp_path):
    cfg = load_preset("five_task", output_dir=str(tmp_path))
    cfg.model.hidden_size, cfg.model.num_attention_heads, cfg.model.intermediate_size = 16, 2, 32
    cfg.data.overrides.update(num_people_task0_train=8, num_people_task0_test=8, people_per_task=6,
                              bios_per_person=2)
    cfg.pretrain.training.update(num_train_epochs=1, warmup_steps=0)
    cfg.training["num_train_epochs"] = 1
    cfg.evaluation.dense_until = 2
    for s in cfg.strategies:
        if s.name == "ewc":
            s.ewc_fisher_batches = 1
    results = run_continual(cfg, log=lambda *_: None)
    arms = results["arms"]
    assert list(arms) == ["seq", "freeze1", "freeze2", "freeze3", "replay", "ewc", "freeze2_es"]
    for name, arm in arms.items():
        R = arm["accuracy_matrix"]
        assert len(R) == 6
        for i in range(6):  # every seen task and the next one are scored after each task
            assert all(R[i][j] is not None for j in range(min(i + 2, 6))), (name, i)
        assert set(arm["metrics"]) == {"average_accuracy", "backward_transfer", "forward_transfer", "forgetting"}
        assert arm["stages"][0] == "trunk/task0"
    es = arms["freeze2_es"]["early_stop"]
    # 20% of each task's 6 training people rounds to 1 person = 6 questions
    assert es[0] is None and all(e is not None and e["validation_rows"] == 1 * 6 for e in es[1:])
    assert arms["seq"]["early_stop"] == [None] * 6
    on_disk = json.loads((tmp_path / "results.json").read_text())
    assert on_disk["arms"]["freeze2"]["recovery"]["train_examples"] == 4 * 6
    report = (tmp_path / "report.md").read_text()
    assert "## Early stopping" in report and "| freeze2_es |" in report
