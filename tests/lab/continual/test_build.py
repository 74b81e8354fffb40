"""fastfreeze.lab.continual.build: task data (generated, saved or local files), tokenizer and model for a run."""
from __future__ import annotations

import pytest

from fastfreeze.lab.continual import build
from fastfreeze.lab.continual.config import ConfigError, DataConfig, ModelConfig
from fastfreeze.lab.continual.presets import load_preset
from fastfreeze.lab.continual.runner import Runner


def test_missing_task_data_names_the_splits(tmp_path):
    cfg = load_preset("quick", output_dir=str(tmp_path))
    cfg.num_tasks = 3  # the quick data has Task 0 and Task 1 only
    cfg.orthogonality.enabled = False
    with pytest.raises(ConfigError, match=r"missing split\(s\) \['task2_train', 'task2_test'\].*num_tasks"):
        Runner(cfg, log=lambda *_: None).run()


def test_data_files_need_prompt_and_answer_columns(tmp_path):
    good, bad = tmp_path / "good.jsonl", tmp_path / "bad.csv"
    good.write_text('{"prompt": "Q:", "answer": " a"}\n')
    bad.write_text("question,answer\nq,a\n")
    dsd = build.load_data_files({"task0_train": str(good)})
    assert list(dsd) == ["task0_train"] and dsd["task0_train"][0] == {"prompt": "Q:", "answer": " a"}
    with pytest.raises(ConfigError, match=r"data.files.task0_test=.*needs rows with 'prompt' and 'answer'"):
        build.load_data_files({"task0_test": str(bad)})


@pytest.mark.parametrize("family", ["llama", "gpt_neox"])
def test_build_model_from_scratch_has_an_untied_head_sized_to_the_tokenizer(family, tmp_path):
    cfg = load_preset("quick", output_dir=str(tmp_path))
    dsd = build.load_task_data(cfg.data, cfg.num_tasks, True, cfg.seed, tmp_path / "data")
    tok = build.load_tokenizer(DataConfig(), dsd, tmp_path / "tok")
    model = build.build_model(ModelConfig(family=family, hidden_size=32, num_attention_heads=2), tok, seed=0)
    assert model.config.model_type == family and model.config.vocab_size == len(tok)
    assert model.get_output_embeddings().weight is not model.get_input_embeddings().weight
    assert build.num_layers_of(model) == 4 and (tmp_path / "data").is_dir() and (tmp_path / "tok").is_dir()
