"""`fastfreeze demo`: the tiny Biography experiment prints its table (on the quick preset), bad input exits 2."""
from __future__ import annotations

import torch

from fastfreeze.lab.continual.cli_demo import main
from fastfreeze.lab.continual.report import summary_rows


def test_demo_prints_the_table(quick_run, capsys):
    cfg, results, out = quick_run
    torch.set_num_threads(2)  # the demo runs on one thread whatever it finds (the README's numbers)
    assert main(["--preset", "quick", "--output-dir", str(out), "--quiet"]) == 0
    assert torch.get_num_threads() == 1
    text = capsys.readouterr().out
    assert "| after Task 0 |" in text and "after Task 1, SEQ" in text and "SEQ + recovery" in text
    assert str(out / "report.md") in text
    rows = dict((label, (t0, t1)) for label, t0, t1 in summary_rows(results))
    assert rows["after Task 1, SEQ"] == tuple(results["arms"]["seq"]["accuracy_matrix"][1])
    # The recovery curve (quick: paper steps x 0.08 -> 0, 4, 12, 24) and the three findings, numbered, at the end.
    assert "| Task-1 step | seq unrecovered -> recovered | freeze1 unrecovered -> recovered |" in text
    assert [line.split(" |")[0] for line in text.splitlines() if line.startswith("| ") and "% ->" in line] == [
        "| 0", "| 4", "| 12", "| 24"]
    found = [line for line in text.splitlines() if line[:3] in ("1. ", "2. ", "3. ")]
    assert [f[:3] for f in found] == ["1. ", "2. ", "3. "]
    assert "Recovery from the step-12 checkpoint" in found[1] and "10 examples ->" in found[1]


def test_bad_frozen_layers_exit_2(tmp_path, capsys):
    assert main(["--preset", "quick", "--output-dir", str(tmp_path), "--num-frozen-layers", "9", "--quiet"]) == 2
    assert "num_frozen_layers=9 is out of range" in capsys.readouterr().err
