"""`fastfreeze continual CONFIG.yaml`: a config error exits 2 naming the field."""
from __future__ import annotations

from fastfreeze.cli.continual import main


def test_cli_reports_config_errors(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("strategy: {name: sgd}\ndata: {preset: quick}\n")
    assert main([str(bad)]) == 2
    assert "strategy 'sgd' is unknown" in capsys.readouterr().err
