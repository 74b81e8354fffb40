"""Bad configs fail early with errors that name the field and the fix."""
import pytest

from fastfreeze.continual.config import ConfigError, ContinualConfig
from fastfreeze.continual.presets import load_preset
from fastfreeze.continual.runner import Runner


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


def test_missing_task_data_names_the_splits(tmp_path):
    cfg = load_preset("quick", output_dir=str(tmp_path))
    cfg.num_tasks = 3  # the quick data has Task 0 and Task 1 only
    cfg.orthogonality.enabled = False
    with pytest.raises(ConfigError, match=r"missing split\(s\) \['task2_train', 'task2_test'\].*num_tasks"):
        Runner(cfg, log=lambda *_: None).run()


def test_missing_config_file(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        ContinualConfig.from_yaml(tmp_path / "nope.yaml")


def test_presets_load_and_paper_is_pythia_shaped():
    paper = load_preset("paper")
    assert (paper.model.family, paper.model.num_hidden_layers, paper.model.hidden_size) == ("gpt_neox", 12, 768)
    assert paper.num_tasks == 6
    tiny = load_preset("tiny")
    assert [s.arm for s in tiny.strategies] == ["seq", "freeze2"]


def test_cli_reports_config_errors(tmp_path, capsys):
    from fastfreeze.continual.runner import main

    bad = tmp_path / "bad.yaml"
    bad.write_text("strategy: {name: sgd}\ndata: {preset: quick}\n")
    assert main([str(bad)]) == 2
    assert "strategy 'sgd' is unknown" in capsys.readouterr().err


def test_make_trainer_embedding_only_freeze(tmp_path):
    """k=0 with freeze=True freezes the embedding alone through FastFreezeTrainer's no-grad prefix."""
    import transformers

    from fastfreeze.continual.trainers import make_trainer
    from tests._helpers import make_model

    model = make_model("llama")
    args = transformers.TrainingArguments(output_dir=str(tmp_path), report_to=[], use_cpu=True)
    trainer = make_trainer(model, args, None, None, num_frozen_layers=0, freeze=True)
    assert trainer.prefix is not None and trainer.freeze_report.num_frozen_layers == 0
    assert not model.model.embed_tokens.weight.requires_grad and model.model.layers[0].mlp.up_proj.weight.requires_grad
    seq = make_trainer(make_model("llama"), args, None, None, num_frozen_layers=0)
    assert seq.prefix is None
