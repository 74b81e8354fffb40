"""The budget's markdown (report.md sections, the table over seeds) and the matched-retention numbers it shows."""
from __future__ import annotations

import pytest

from fastfreeze.lab.continual.budget_report import budget_sections, seed_table
from fastfreeze.lab.continual.metrics import matched_retention, seed_summary


def _arm(curve, counts=True):
    """An arm with a budget record on task 1 built from [(step, validation, task0), ...], over 100 rows; without
    `counts` its checks hold only the mean, as records made before 2026-12-07 do."""
    hist = [{"step": s, "exact_match": v, "task0": t0, **({"correct": round(v * 100)} if counts else {})}
            for s, v, t0 in curve]
    return {"budget": [None, {"history": hist, "epochs": 2.0, "validation_rows": 100}],
            "accuracy_matrix": [[0.9, 0.0], [0.3, 0.8]]}


def test_matched_retention_compares_rows_and_reads_old_records_the_same():
    # freeze2's best is 70 of 100 rows as a float32 mean (0.69999999); SEQ's first check at 70 rows is step 20
    arms = {"seq": _arm([(10, 0.5, 0.6), (20, 0.7, 0.4), (30, 0.95, 0.2)]),
            "freeze2": _arm([(10, 0.3, 0.8), (20, 0.6999999880790710, 0.7)])}
    m = matched_retention(arms, "seq")["1"]["freeze2"]
    assert (m["level_rows"], m["step"], m["reference_step"]) == (70, 20, 20)
    old = {k: _arm([(h["step"], h["exact_match"], h["task0"]) for h in a["budget"][1]["history"]], counts=False)
           for k, a in arms.items()}
    assert matched_retention(old, "seq") == matched_retention(arms, "seq")


def test_matched_retention_reads_each_arm_at_the_common_level():
    arms = {"seq": _arm([(10, 0.5, 0.6), (20, 0.8, 0.4), (30, 0.95, 0.2)]),
            "freeze2": _arm([(10, 0.3, 0.8), (20, 0.7, 0.7), (30, 0.85, 0.65), (40, 0.84, 0.6)])}
    m = matched_retention(arms, "seq")["1"]["freeze2"]
    # level = min(0.85, 0.95); freeze2 first reaches it at step 30 (Task 0 at 0.65), SEQ at step 30 (0.2)
    assert (m["level"], m["step"], m["task0"], m["reference_step"], m["reference_task0"]) == (0.85, 30, 0.65, 30, 0.2)
    assert m["ratio"] == pytest.approx(3.25)
    results = {"num_tasks": 2, "arms": arms, "matched_retention": matched_retention(arms, "seq"),
               "config": {"budget": {"reference": "seq"}}}
    arms["seq"]["budget"][1].update(steps=30, reason="reference", final_validation=0.95)
    arms["freeze2"]["budget"][1].update(steps=40, reason="plateau", final_validation=0.84)
    text = "\n".join(budget_sections(results))
    assert "| freeze2 | 2.0 (40, plateau; 84.0) |" in text and "| 1 | freeze2 | 85.0 | 65.0 (30) | 20.0 (30) | 3.25x |" in text
    summary = seed_summary([results, results])
    assert summary["freeze2"]["matched1_ratio"]["mean"] == pytest.approx(3.25)
    assert summary["seq"]["later_acc"] == {"mean": 0.8, "min": 0.8, "max": 0.8, "n": 2}
    assert "| freeze2 | 2.0 [2.0, 2.0] | 80.0 [80.0, 80.0] | 30.0 [30.0, 30.0] | 65.0 [65.0, 65.0] | 3.25" in \
        seed_table(summary)
