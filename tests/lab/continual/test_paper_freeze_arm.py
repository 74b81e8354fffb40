"""The paper_freeze arm: the official code's substring rule with a plain Trainer, next to the index-exact Freeze arm."""
from __future__ import annotations

import shutil

import pytest
import torch
import transformers

from fastfreeze.lab.continual import build
from fastfreeze.lab.continual.config import ConfigError, ContinualConfig, StrategyConfig
from fastfreeze.lab.continual.paper_sets import apply_substring_freeze
from fastfreeze.lab.continual.presets import load_preset
from fastfreeze.lab.continual.runner import Runner

# The paper's Biography Freeze-7 list as its configs spell it (embed_tokens, layers.0 ... layers.6).
BIOGRAPHY_FREEZE7 = ["embed_tokens"] + [f"layers.{i}" for i in range(7)]


def _blocks_training(model) -> list[int]:
    return [i for i, layer in enumerate(model.model.layers) if any(p.requires_grad for p in layer.parameters())]


def test_biography_freeze7_on_12_blocks_trains_blocks_7_to_9_only():
    cfg = transformers.LlamaConfig(vocab_size=32, hidden_size=16, intermediate_size=32, num_hidden_layers=12,
                                   num_attention_heads=2, num_key_value_heads=2, tie_word_embeddings=False)
    model = transformers.LlamaForCausalLM(cfg)
    apply_substring_freeze(model, BIOGRAPHY_FREEZE7)
    assert _blocks_training(model) == [7, 8, 9]  # 'layers.1' also froze layers.10 and layers.11
    assert not model.model.embed_tokens.weight.requires_grad and model.lm_head.weight.requires_grad
    # Index-exact k=7 (what freeze_bottom_layers does) would train 7-11: the two sets differ.
    assert _blocks_training(model) != list(range(7, 12))


def test_paper_freeze_arm_is_validated():
    def check(**kw):
        ContinualConfig.from_dict({"strategies": [{"name": "seq"}, kw]}).validate()

    check(name="paper_freeze", patterns=["embed_tokens", "layers.0."])
    with pytest.raises(ConfigError, match="non-empty list"):
        check(name="paper_freeze", patterns=[])
    with pytest.raises(ConfigError, match="for paper_freeze only"):
        check(name="freeze", num_frozen_layers=1, patterns=["layers.0"])


def test_plain_paper_freeze_equals_the_index_exact_arm_at_toy_depth(quick_run, tmp_path):
    _, _, out = quick_run
    shutil.copytree(out, tmp_path / "run")  # its data and trunk/task0 checkpoint
    cfg = load_preset("quick", output_dir=str(tmp_path / "run"))
    plain = StrategyConfig(name="paper_freeze", label="paper1", patterns=["embed_tokens", "layers.0."])
    exact = StrategyConfig(name="freeze", num_frozen_layers=1)
    cfg.strategies = [exact, plain]
    cfg.evaluation.dense_task = 99
    runner = Runner(cfg, log=lambda *_: None)
    runner.prepare()
    records = {s.arm: runner._train_task(s, 1, "trunk/task0", f"{s.arm}/task1", shared=False, orth_on=False)
               for s in (exact, plain)}
    assert records["paper1"]["paper_freeze"]["frozen_blocks"] == [0]
    assert records["paper1"]["paper_freeze"]["embedding_frozen"]
    a = runner._load("freeze1/task1").state_dict()
    b = runner._load("paper1/task1").state_dict()
    start = runner._load("trunk/task0").state_dict()
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=1e-5, atol=1e-6, msg=name)
    assert torch.equal(b["model.layers.0.mlp.up_proj.weight"], start["model.layers.0.mlp.up_proj.weight"])
    assert not torch.equal(b["model.layers.1.mlp.up_proj.weight"], start["model.layers.1.mlp.up_proj.weight"])
    assert records["freeze1"]["evals"] == records["paper1"]["evals"]
