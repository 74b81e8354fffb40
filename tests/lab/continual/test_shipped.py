"""fastfreeze.lab.continual.shipped: the demo's shipped checkpoint has the tiny preset's recipe; runs use one only then."""
from __future__ import annotations

import json
import shutil

import pytest
from safetensors.torch import load_file

from fastfreeze.lab.continual import shipped
from fastfreeze.lab.continual.presets import load_preset
from fastfreeze.lab.continual.runner import Runner

REGENERATE = "python -m fastfreeze.lab.continual.cli_demo_checkpoint regenerate"


def test_tiny_preset_uses_the_shipped_checkpoint(tmp_path):
    """The recipe (settings, tokenized biographies, initial weights) recomputed now equals the shipped one, so
    the demo copies the shipped weights; a change to tiny.yaml, the data generator, the tokenizer or the init
    fails here. Whether pretraining still makes these weights: `python -m fastfreeze.lab.continual.cli_demo_checkpoint check`."""
    runner = Runner(load_preset("tiny", output_dir=str(tmp_path)), log=lambda *_: None)
    recipe = runner.pretrain_recipe(runner.prepare())
    stored = json.loads((shipped.SHIPPED_DIR / "tiny" / shipped.RECIPE_FILE).read_text())["recipe"]
    assert {k: stored[k] for k in shipped.RECIPE_KEYS} == recipe, f"the tiny recipe changed: run `{REGENERATE}`"
    _, record = runner.pretrain()
    assert record["shipped"] == "tiny" and record["steps"] > 0
    copied = load_file(str(tmp_path / "checkpoints" / "pretrain" / "model.safetensors"))
    original = load_file(str(shipped.SHIPPED_DIR / "tiny" / "model.safetensors"))
    assert copied.keys() == original.keys() and all((copied[k] == original[k]).all() for k in copied)


def _ship(quick_run, folder):
    """A shipped checkpoint made from the quick run's pretraining, with its recorded recipe."""
    _, results, out = quick_run
    shutil.copytree(out / "checkpoints" / "pretrain", folder)
    meta = {"recipe": results["pretrain"]["recipe"], "train_loss": 1.5, "steps": 7}
    (folder / shipped.RECIPE_FILE).write_text(json.dumps(meta))
    return meta


def test_a_run_copies_a_shipped_checkpoint_only_when_its_recipe_matches(quick_run, tmp_path, monkeypatch):
    cfg, results, out = quick_run
    monkeypatch.setattr(shipped, "SHIPPED_DIR", tmp_path / "shipped")
    meta = _ship(quick_run, tmp_path / "shipped" / "q")
    cfg2 = load_preset("quick", output_dir=str(tmp_path / "run"))
    cfg2.pretrain.shipped = True
    lines = []
    _, record = Runner(cfg2, log=lines.append).pretrain()
    assert record["shipped"] == "q" and (record["train_loss"], record["steps"]) == (1.5, 7)
    assert any("shipped checkpoint 'q' has this run's recipe" in line for line in lines)
    assert record["recipe"] == results["pretrain"]["recipe"]
    for key in shipped.RECIPE_KEYS:  # any part of the recipe that differs: not this run's weights
        other = {**meta["recipe"], key: "0" * 16}
        assert shipped.find_shipped(other) is None, key
    assert shipped.find_shipped(meta["recipe"]) == tmp_path / "shipped" / "q"


@pytest.mark.parametrize("flag, expected", [([], True), (["--pretrain"], False)])
def test_demo_pretrain_flag_turns_the_shipped_checkpoint_off(flag, expected, tmp_path, monkeypatch):
    from fastfreeze.lab.continual.cli_demo import main
    from fastfreeze.lab.continual import runner
    from fastfreeze.lab.continual.config import ConfigError

    seen = []

    def fake_run(cfg, log=print):
        seen.append(cfg.pretrain.shipped)
        raise ConfigError("stop here")

    monkeypatch.setattr(runner, "run_continual", fake_run)
    assert main(["--output-dir", str(tmp_path), "--quiet", *flag]) == 2
    assert seen == [expected]
