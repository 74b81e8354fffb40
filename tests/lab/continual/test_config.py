"""Bad configs fail early with errors that name the field and the fix."""
import pytest

from fastfreeze.lab.continual.config import ConfigError, ContinualConfig


def _cfg(**changes):
    base = {"model": {"num_hidden_layers": 2, "hidden_size": 32, "num_attention_heads": 2},
            "data": {"preset": "quick"}, "strategies": [{"name": "seq"}]}
    base.update(changes)
    return ContinualConfig.from_dict(base)


def test_unknown_strategy():
    with pytest.raises(ConfigError, match=r"strategy 'lora' is unknown; use one of \('seq', 'freeze'"):
        _cfg(strategies=[{"name": "lora"}]).validate()


@pytest.mark.parametrize("k", [3, -1])
def test_frozen_layers_out_of_range(k):
    with pytest.raises(ConfigError, match=r"num_frozen_layers=.* out of range.*2 decoder layers, so use 0\.\.2"):
        _cfg(strategies=[{"name": "freeze", "num_frozen_layers": k}]).validate()


def test_embedding_only_freeze_needs_frozen_embeddings():
    _cfg(strategies=[{"name": "freeze", "num_frozen_layers": 0}]).validate()  # embedding only: valid
    with pytest.raises(ConfigError, match=r"so use 1\.\.2"):
        _cfg(strategies=[{"name": "freeze", "num_frozen_layers": 0, "freeze_embeddings": False}]).validate()


def test_unknown_keys_are_named():
    with pytest.raises(ConfigError, match=r"strategies\[0\]: unknown key\(s\) \['k'\]"):
        _cfg(strategies=[{"name": "freeze", "k": 2}])
    with pytest.raises(ConfigError, match=r"\['learning_rte'\] are not TrainingArguments fields"):
        _cfg(training={"learning_rte": 1e-3}).validate()
    with pytest.raises(ConfigError, match="output_dir is set by the runner|set by the runner"):
        _cfg(training={"output_dir": "x"}).validate()


def test_replay_and_ewc_need_their_knob():
    with pytest.raises(ConfigError, match="replay_fraction=0.0 must be in"):
        _cfg(strategies=[{"name": "replay"}]).validate()
    with pytest.raises(ConfigError, match="ewc_lambda=0.0 must be > 0"):
        _cfg(strategies=[{"name": "ewc"}]).validate()


def test_missing_config_file(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        ContinualConfig.from_yaml(tmp_path / "nope.yaml")
