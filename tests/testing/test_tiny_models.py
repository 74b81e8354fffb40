"""Tiny models of any registered type: small by field name, seeded, every layer kind kept, out-of-scope types named."""
from __future__ import annotations

import pytest
import torch

from fastfreeze.testing import tiny_models as tm
from fastfreeze._hf_compat import attn_implementation


def test_a_config_is_shrunk_by_field_name():
    cfg = tm.tiny_config("llama")
    assert (cfg.hidden_size, cfg.num_hidden_layers, cfg.vocab_size) == (tm.HIDDEN, tm.LAYERS, tm.VOCAB)
    assert (cfg.num_attention_heads, cfg.num_key_value_heads) == (tm.HEADS, tm.KV_HEADS)
    assert cfg.intermediate_size == tm.INTERMEDIATE and cfg.attention_dropout == 0.0
    assert cfg.use_cache is False and attn_implementation(cfg) == "eager"


def test_expert_counts_are_capped():
    cfg = tm.tiny_config("mixtral")
    assert (cfg.num_local_experts, cfg.num_experts_per_tok) == (tm.EXPERTS, tm.EXPERTS_PER_TOKEN)


def test_a_per_layer_list_keeps_every_kind_alternating():
    assert tm._shrink_layer_list(["a", "a", "b", "a", "b", "c"], 4) == ["a", "b", "c", "a"]


def test_the_model_is_seeded_fp32_and_eager():
    cfg = tm.tiny_config("llama")
    a, b, c = tm.build_model(cfg, seed=0), tm.build_model(cfg, seed=0), tm.build_model(cfg, seed=1)
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values(), strict=True))
    assert not all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), c.state_dict().values(), strict=True))
    assert {p.dtype for p in a.parameters()} == {torch.float32} and attn_implementation(a.config) == "eager"


@pytest.mark.parametrize("model_type,reason", [
    ("llama", None), ("mixtral", None), ("t5", "encoder-decoder"), ("gemma3", "multimodal (vision_config)"),
])
def test_out_of_scope_types_are_named(model_type, reason):
    assert tm.not_applicable_reason(model_type) == reason
