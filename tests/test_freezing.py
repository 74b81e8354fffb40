"""freeze_bottom_layers, FreezeConfig validation, family resolution and the bad-input errors."""
from __future__ import annotations

import pytest
import torch
import transformers

from fastfreeze import FreezeConfig, FreezeConfigError, UnsupportedModelError, apply_freeze, freeze_bottom_layers, resolve
from tests.conftest import FAMILIES, make_model


@pytest.mark.parametrize("family", FAMILIES)
def test_resolve_every_family(family):
    parts = resolve(make_model(family))
    assert parts.num_layers == 4 and parts.final_norm is not None and parts.embedding_side


def test_selects_layers_by_index_not_substring():
    """The paper's substring match freezes layers 10-19 for 'layers.1'; index selection must not."""
    cfg = transformers.LlamaConfig(vocab_size=50, hidden_size=16, num_hidden_layers=12, num_attention_heads=2,
                                   intermediate_size=32)
    model = transformers.LlamaForCausalLM(cfg)
    report = freeze_bottom_layers(model, 2)
    for i, layer in enumerate(model.model.layers):
        assert all(p.requires_grad == (i >= 2) for p in layer.parameters()), i
    assert report.frozen_modules == ["model.embed_tokens", "model.layers.0", "model.layers.1"]
    assert "model.layers.[2-11]" in str(report)
    assert report.frozen_params + report.trainable_params == sum(p.numel() for p in model.parameters())


def test_report_counts_and_percentages():
    model = make_model("llama")
    r = freeze_bottom_layers(model, 2)
    frozen = sum(p.numel() for p in model.parameters() if not p.requires_grad)
    assert r.frozen_params == frozen and 0 < r.frozen_fraction < 1
    assert f"{100 * r.frozen_fraction:5.1f}%" in str(r)


@pytest.mark.parametrize("bad", [-1, 1.5, True, "2"])
def test_config_rejects_bad_k(bad):
    with pytest.raises(FreezeConfigError):
        FreezeConfig(num_frozen_layers=bad)


def test_config_rejects_bad_knobs():
    with pytest.raises(FreezeConfigError, match="kernels"):
        FreezeConfig(num_frozen_layers=1, kernels="cuda")
    with pytest.raises(FreezeConfigError, match="cache_dir"):
        FreezeConfig(num_frozen_layers=1, cache="disk")
    with pytest.raises(FreezeConfigError, match="freeze_embeddings=True"):
        FreezeConfig(num_frozen_layers=1, cache="memory", freeze_embeddings=False)
    with pytest.raises(FreezeConfigError, match="Unknown"):
        FreezeConfig.from_dict({"num_frozen_layers": 1, "layers": 2})


def test_k_larger_than_depth():
    with pytest.raises(FreezeConfigError, match="0..4"):
        apply_freeze(make_model("llama"), FreezeConfig(num_frozen_layers=5))


def test_nothing_left_to_train():
    # GPT-2: tied head, k = L: only ln_f would train... it has parameters, so it trains. Remove them:
    model = make_model("gpt2")
    model.transformer.ln_f = torch.nn.LayerNorm(32, elementwise_affine=False)
    with pytest.raises(FreezeConfigError, match="nothing to"):
        freeze_bottom_layers(model, 4)


def test_tied_head_warns_and_untie_trains_head():
    model = make_model("gpt2")
    with pytest.warns(UserWarning, match="untie_embeddings=True"):
        r = freeze_bottom_layers(model, 1)
    assert r.head_tied_to_embedding and not r.head_trainable and not model.lm_head.weight.requires_grad
    model = make_model("gpt2")
    r = freeze_bottom_layers(model, 1, untie_embeddings=True)
    assert r.head_trainable and model.lm_head.weight.requires_grad
    assert not model.transformer.wte.weight.requires_grad
    assert model.lm_head.weight is not model.transformer.wte.weight
    assert model.config.tie_word_embeddings is False
    assert torch.equal(model.lm_head.weight, model.transformer.wte.weight)


def test_untied_model_saves_and_loads_untied(tmp_path):
    model = make_model("gpt2")
    freeze_bottom_layers(model, 1, untie_embeddings=True)
    with torch.no_grad():
        model.lm_head.weight.add_(0.5)
    model.save_pretrained(tmp_path)
    loaded = transformers.AutoModelForCausalLM.from_pretrained(tmp_path)
    assert torch.equal(loaded.lm_head.weight, model.lm_head.weight)
    assert not torch.equal(loaded.lm_head.weight, loaded.transformer.wte.weight)


def test_refuses_encoder_decoder_and_non_lm():
    t5 = transformers.T5ForConditionalGeneration(transformers.T5Config(vocab_size=32, d_model=16, d_ff=32, num_layers=1,
                                                                     num_heads=2, d_kv=8))
    with pytest.raises(UnsupportedModelError, match="encoder-decoder"):
        resolve(t5)
    base = transformers.LlamaModel(make_model("llama").config)
    with pytest.raises(UnsupportedModelError, match="AutoModelForCausalLM"):
        resolve(base)


def test_refuses_quantized_and_unknown_structure():
    model = make_model("llama")
    model.is_quantized = True
    with pytest.raises(UnsupportedModelError, match="quantized"):
        resolve(model)
    model = make_model("llama")
    model.config.model_type = "mystery"
    model.model.layers = torch.nn.Sequential(*model.model.layers)  # blocks no longer a ModuleList
    with pytest.raises(UnsupportedModelError, match="FamilySpec"):
        resolve(model)


def test_generic_discovery_matches_family_table():
    """An unknown model_type with a standard layout goes through discovery and trains the same."""
    model = make_model("llama")
    model.config.model_type = "my_llama_fork"
    parts = resolve(model)
    assert parts.spec.notes == "discovered generically"
    assert parts.layers_path == "model.layers" and parts.final_norm_path == "model.norm"
    assert [p for p, _ in parts.embedding_side] == ["model.embed_tokens"]
    rt = apply_freeze(model, FreezeConfig(num_frozen_layers=2))
    assert rt.prefix is not None


def test_boundary_flow_probe_rejects_hidden_transform():
    """Granite multiplies the embedding output by `embedding_multiplier` inside the base model's
    forward, between the embedding module and block 0. Splitting there (k=0) would feed the cache an
    unscaled boundary: the probe must refuse it. At k=1 the hand-off is direct and the split is fine."""
    cfg = transformers.GraniteConfig(vocab_size=50, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                                     intermediate_size=32, embedding_multiplier=12.0)
    model = transformers.GraniteForCausalLM(cfg)
    assert resolve(model).spec.notes == "discovered generically"
    with pytest.raises(UnsupportedModelError, match="not passed unchanged"):
        apply_freeze(model, FreezeConfig(num_frozen_layers=0))
    model = transformers.GraniteForCausalLM(cfg)
    assert apply_freeze(model, FreezeConfig(num_frozen_layers=1)).prefix is not None


def test_freeze_embeddings_false_is_plain_freeze():
    model = make_model("llama")
    rt = apply_freeze(model, FreezeConfig(num_frozen_layers=2, freeze_embeddings=False))
    assert rt.prefix is None and model.model.embed_tokens.weight.requires_grad
    assert not any(p.requires_grad for p in model.model.layers[1].parameters())
