"""`fastfreeze continual CONFIG.yaml`: a config error exits 2 naming the field."""
from __future__ import annotations

from fastfreeze.lab.continual.cli import main


def test_cli_reports_config_errors(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("strategy: {name: sgd}\ndata: {preset: quick}\n")
    assert main([str(bad)]) == 2
    assert "strategy 'sgd' is unknown" in capsys.readouterr().err


def test_cli_refuses_a_python_tag_in_one_line(tmp_path, capsys):
    bad = tmp_path / "tagged.yaml"
    bad.write_text("output_dir: !!python/object/apply:os.system ['echo hi']\n")
    assert main([str(bad)]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "not plain YAML at line 1" in err and "Traceback" not in err
