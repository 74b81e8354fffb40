"""fastfreeze.lab.continual.config_checks: value types named with the fix, YAML tags refused in one line."""
from __future__ import annotations

import pytest

from fastfreeze.lab.continual.config import ConfigError, ContinualConfig
from fastfreeze.lab.continual.config_checks import EarlyStopConfig, _type_ok


@pytest.mark.parametrize("value, annotation, ok", [
    (3, "int", True), (True, "int", False), (2, "float", True), ("x", "float", False),
    (None, "int | None", True), ("end", "int | None", False), ([1], "list | None", True), ({}, "Any", True),
])
def test_type_ok(value, annotation, ok):
    assert _type_ok(value, annotation) is ok


def test_wrong_types_and_python_tags_are_config_errors(tmp_path):
    with pytest.raises(ConfigError, match=r"config.num_tasks='abc' has the wrong type; expected int"):
        ContinualConfig.from_dict({"num_tasks": "abc"})
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: !!python/object:os.system {}\n")
    with pytest.raises(ConfigError, match=r"is not plain YAML at line 1: .*no !!python tags"):
        ContinualConfig.from_yaml(bad)


def test_early_stop_settings_are_checked():
    with pytest.raises(ConfigError, match=r"early_stop.target and early_stop.fraction must be in \(0, 1\]"):
        EarlyStopConfig(target=1.5).validate("freeze2_es")
    with pytest.raises(ConfigError, match=r"unknown key\(s\) \['patiense'\]"):
        ContinualConfig.from_dict({"strategies": [{"name": "freeze", "num_frozen_layers": 1,
                                                   "early_stop": {"patiense": 3}}]}).validate()
