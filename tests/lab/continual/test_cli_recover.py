"""`fastfreeze recover RUN_DIR`: the recovery test on a finished run; a bad run directory or arm exits 2."""
from __future__ import annotations

import json
import shutil

from fastfreeze.lab.continual.cli_recover import main


def test_recovery_of_one_arm_writes_its_record(quick_run, tmp_path, capsys):
    _, results, out = quick_run
    run = tmp_path / "run"
    shutil.copytree(out, run)  # a copy: the shared quick run stays as its other tests expect it
    assert main([str(run), "--arm", "seq", "--fraction", "0.5"]) == 0
    record = json.loads((run / "recovery-seq.json").read_text())
    expected = json.loads(json.dumps(results["arms"]["seq"]["recovery"]))
    for r in (record, expected):
        r.pop("seconds")
    assert record == expected  # the same fine-tune from the same checkpoint and seed as inside the run
    assert "seq: Task-0 exact match" in capsys.readouterr().out


def test_not_a_run_directory_or_unknown_arm_exits_2(quick_run, tmp_path, capsys):
    assert main([str(tmp_path)]) == 2
    assert "config.yaml not found" in capsys.readouterr().err
    _, _, out = quick_run
    assert main([str(out), "--arm", "nope"]) == 2
    assert "--arm 'nope' is not an arm of this run" in capsys.readouterr().err
