"""`fastfreeze orthogonality W0 W1 W2`: the table and files for three checkpoints; a bad path exits 2."""
from __future__ import annotations

import json

import torch

from fastfreeze.lab.continual.cli_orthogonality import main
from tests._helpers import make_model


def test_three_checkpoints_give_the_table_and_files(tmp_path, capsys):
    model = make_model("llama")
    for i, name in enumerate(("w0", "w1", "w2")):
        with torch.no_grad():
            for layer in model.model.layers[2:]:  # layers 0-1 never move: reported frozen
                layer.mlp.up_proj.weight.add_(torch.randn_like(layer.mlp.up_proj.weight) * 0.1 * i)
        model.save_pretrained(tmp_path / name)
    out = tmp_path / "out"
    assert main([str(tmp_path / n) for n in ("w0", "w1", "w2")] + ["--output-dir", str(out)]) == 0
    printed = capsys.readouterr().out
    assert printed.startswith("| layer |") and "| 0 |" in printed and "frozen" in printed
    result = json.loads((out / "orthogonality.json").read_text())
    moved = {r["layer"] for r in result["rows"] if not r["frozen"]}
    assert moved == {"2", "3"} and (out / "orthogonality.png").is_file()


def test_missing_checkpoint_exits_2(tmp_path, capsys):
    assert main([str(tmp_path / "nope"), str(tmp_path), str(tmp_path)]) == 2
    assert "is not a checkpoint folder" in capsys.readouterr().err
