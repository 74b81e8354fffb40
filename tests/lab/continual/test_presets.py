"""fastfreeze.lab.continual.presets: the named YAML presets load as validated configs."""
from __future__ import annotations

import pytest

from fastfreeze.lab.continual.config import ConfigError
from fastfreeze.lab.continual.presets import load_preset, preset_path


def test_presets_load_and_paper_is_pythia_shaped():
    paper = load_preset("paper")
    assert (paper.model.family, paper.model.num_hidden_layers, paper.model.hidden_size) == ("gpt_neox", 12, 768)
    assert paper.num_tasks == 6
    tiny = load_preset("tiny")
    assert [s.arm for s in tiny.strategies] == ["seq", "freeze2"]


def test_unknown_preset_is_refused_with_the_choices(tmp_path):
    with pytest.raises(ConfigError, match=r"unknown preset 'huge'; choose one of \('quick', 'tiny', 'five_task', 'five_task_fair', 'paper'\)"):
        preset_path("huge")
    assert load_preset("quick", output_dir=str(tmp_path)).output_dir == str(tmp_path)
