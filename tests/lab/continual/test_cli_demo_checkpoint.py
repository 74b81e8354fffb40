"""`python -m fastfreeze.lab.continual.cli_demo_checkpoint`: regenerate writes weights + recipe; check finds any difference."""
from __future__ import annotations

import json

import pytest
from safetensors.torch import load_file, save_file

from fastfreeze.lab.continual import cli_demo_checkpoint as demo_checkpoint
from fastfreeze.lab.continual import shipped


@pytest.fixture
def fake_pretraining(quick_run, tmp_path, monkeypatch):
    """The quick run's pretraining stands in for tiny's (a real one takes ~10 CPU-minutes)."""
    _, results, out = quick_run
    record = results["pretrain"]
    monkeypatch.setattr(demo_checkpoint, "_pretrained",
                        lambda work: (None, record["recipe"], record, out / "checkpoints" / "pretrain"))
    monkeypatch.setattr(shipped, "SHIPPED_DIR", tmp_path / "shipped")
    return record


def test_regenerate_then_check_is_clean_and_check_names_what_differs(fake_pretraining, tmp_path):
    folder = demo_checkpoint.regenerate(str(tmp_path / "work"))
    meta = json.loads((folder / shipped.RECIPE_FILE).read_text())
    assert meta["recipe"] == fake_pretraining["recipe"] and meta["steps"] == fake_pretraining["steps"]
    assert shipped.find_shipped(fake_pretraining["recipe"]) == folder
    assert demo_checkpoint.check(str(tmp_path / "work")) == []

    weights = load_file(str(folder / "model.safetensors"))
    name = sorted(weights)[0]
    weights[name] = weights[name].clone()
    weights[name].view(-1)[0] += 1e-3
    save_file(weights, str(folder / "model.safetensors"))
    meta["recipe"]["data_sha256"] = "0" * 64
    (folder / shipped.RECIPE_FILE).write_text(json.dumps(meta))
    problems = demo_checkpoint.check(str(tmp_path / "work"))
    assert [p.split(":")[0] for p in problems] == ["recipe data_sha256", name]
    assert demo_checkpoint.main(["check"]) == 1
