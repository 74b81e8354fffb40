"""fastfreeze.lab.continual.report: report.md from a results dict (every section, only when measured) and the demo tables."""
from __future__ import annotations

import copy
import json

from fastfreeze.lab.continual.report import (format_safety_table, format_table, markdown_table, render_report,
                                         render_safety_section, summary_rows, write_outputs)


def _orth_rows():
    return [{"name": "model.layers.0.mlp.up_proj.weight", "layer": "0", "component": "mlp.up_proj", "frozen": True},
            {"name": "model.layers.1.mlp.up_proj.weight", "layer": "1", "component": "mlp.up_proj", "frozen": False,
             "mean_cos": 0.5, "random_cos": 0.1}]


def _arm(name, k, R):
    return {"strategy": {"name": name, "num_frozen_layers": k}, "accuracy_matrix": R, "first_token_matrix": R,
            "metrics": {"average_accuracy": 0.5, "backward_transfer": -0.25, "forward_transfer": None, "forgetting": 0.25},
            "dense": {"history": [{"step": 0, "exact_match": 0.8, "first_token": 0.9},
                                  {"step": 30, "exact_match": 0.2, "first_token": 0.5}]},
            "recovery": {"task": 0, "train_examples": 12, "steps": 3, "before": {"exact_match": 0.2},
                         "after": {"0": {"exact_match": 0.6}, "1": {"exact_match": 0.7}}},
            "orthogonality": {"windows": [[0, 10], [10, 20]], "rows": _orth_rows()}}


def _results():
    return {"num_tasks": 2, "config": {"data": {}, "safety": {"keywords": "advbench-short-v1"}}, "written": "today",
            "machine": "cpu", "baseline": [0.0, 0.1], "timings_s": {"pretrain": 1.5},
            "arms": {"seq": _arm("seq", 0, [[0.8, 0.0], [0.25, 0.9]]),
                     "freeze2": _arm("freeze", 2, [[0.8, 0.0], [0.5, 0.85]])}}


def test_report_has_every_measured_section():
    text = render_report(_results(), {"matrices": "accuracy_matrix.png", "dense": "d.png"})
    assert "| seq | 50.0 | -25.0 | - | 25.0 | 25.0 | 90.0 |" in text  # summary row: ACC, BWT, FWT, F, finals
    assert "Before Task 0 (pretrained model): task 0 0.0, task 1 10.0" in text
    assert "| task 1 | 25.0 (25.0) | 90.0 (90.0) |" in text and "![accuracy matrices](accuracy_matrix.png)" in text
    assert "| seq | 80.0 | 20.0 (30) | 20.0 (step 30) | 20.0 (step 30) |" in text and "![dense](d.png)" in text
    assert "| freeze2 | 0 | 12 QA rows | 3 | 20.0 | 60.0 | 70.0 |" in text
    assert "### seq: steps [0, 10] vs [10, 20]" in text and "## Metric definitions" in text
    assert "pretrain: 1.5" in text and "## Safety" not in text  # nothing measured, no section


def test_sections_not_measured_are_left_out():
    results = _results()
    for arm in results["arms"].values():
        arm["dense"] = arm["recovery"] = arm["orthogonality"] = None
    text = render_report(results, {})
    assert "## Recovery test" not in text and "## Task-0 accuracy during Task 1" not in text
    assert "## Update orthogonality" not in text and "![" not in text


def test_orthogonality_table_marks_frozen_matrices():
    table = markdown_table({"rows": _orth_rows()})
    assert table.splitlines()[0] == "| layer | mlp.up_proj |"
    assert "| 0 | frozen |" in table and "| 1 | 0.50 (0.10) |" in table


def test_demo_table_and_safety_tables():
    results = _results()
    rows = dict((label, (t0, t1)) for label, t0, t1 in summary_rows(results))
    assert rows["after Task 0"] == (0.8, 0.0) and rows["after Task 1, Freeze (embedding + 2 layers)"] == (0.5, 0.85)
    assert rows["SEQ + recovery"] == (0.6, 0.7)
    assert "| after Task 1, SEQ | 25.0% | 90.0% |" in format_table(results)
    stage = {"harmful": {"plain": {"jailbreak_rate": 0.25}}, "benign": {"refusal_rate": 0.1, "helpful_rate": None}}
    for arm in results["arms"].values():
        arm["safety"] = [stage, stage]
    section = "\n".join(render_safety_section(results))
    assert "## Safety (refusal-keyword proxy)" in section and "| seq | after Task 0 | 25.0 | 10.0 | - | 80.0 |" in section
    safety_results = copy.deepcopy(results)
    safety_results["num_tasks"] = 1
    table = format_safety_table({5: safety_results})
    assert "| aligned | none | 25.0% | 10.0% | - | 0.0% |" in table and "| Freeze k=2 (+embedding) | 5 epochs |" in table


def test_write_outputs_writes_results_report_and_plots(tmp_path):
    paths = write_outputs(_results(), tmp_path)
    assert set(paths) == {"results", "report", "matrices", "dense", "orthogonality"}
    assert all(p.is_file() for p in paths.values())
    assert json.loads(paths["results"].read_text())["plots"]["dense"] == "task0_during_task1.png"
    assert "![dense](task0_during_task1.png)" in paths["report"].read_text()
    assert not [p for p in tmp_path.iterdir() if ".tmp" in p.name]


def _curve_results():
    seq = {"strategy": {"name": "seq"}, "accuracy_matrix": [[0.9, 0.0], [0.2, 0.98]],
           "dense": {"history": [{"step": 0, "exact_match": 0.9}, {"step": 40, "exact_match": 0.1},
                                 {"step": 200, "exact_match": 0.05}]},
           "recovery_curve": {"points": [{"step": 0, "before": 0.9, "after": 0.92},
                                         {"step": 150, "before": 0.4, "after": 0.75}]},
           "recovery_few": {"step": 150, "rows": [{"examples": 10, "before": 0.4, "after": 0.45},
                                                   {"examples": 600, "before": 0.4, "after": 0.75}]}}
    frz = {"strategy": {"name": "freeze"}, "accuracy_matrix": [[0.9, 0.0], [0.5, 0.97]]}
    return {"arms": {"seq": seq, "freeze2": frz}}


def test_findings_quote_the_numbers():
    from fastfreeze.lab.continual.report import findings, format_curve

    f = findings(_curve_results())
    assert f[0] == ("1. Collapse: under SEQ, Task-0 accuracy fell from 90.0% to 10.0% by step 40 of Task 1 "
                    "(target: within the first 150).")  # the step-200 low is outside the window
    assert "10 examples -> 45.0% (50%); 600 examples -> 75.0% (83%)" in f[1]
    assert f[2].startswith("3. Freeze vs SEQ after the last task: Task-0 SEQ 20.0% (last task 98.0%), freeze2 50.0%")
    assert format_curve(_curve_results()).splitlines()[3] == "| 150 | 40.0% -> 75.0% |"
