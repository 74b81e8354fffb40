"""freeze_bottom_layers, FreezeConfig validation, family resolution and the bad-input errors."""
from __future__ import annotations

import pytest
import torch
import transformers

from fastfreeze import FreezeConfig, FreezeConfigError, UnsupportedModelError, apply_freeze, freeze_bottom_layers, resolve
from tests._helpers import FAMILIES, make_model


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


# ------------------------------------------------------------------ discovery by execution order
from benchmarks.compat_models import build_model, tiny_config  # noqa: E402


@pytest.mark.parametrize("model_type, final_norm", [
    ("ctrl", "transformer.layernorm"), ("biogpt", "biogpt.layer_norm"), ("xglm", "model.layer_norm"),
    ("lfm2", "model.embedding_norm"), ("rwkv", "rwkv.ln_out"), ("xlstm", "backbone.out_norm"),
])
def test_modules_after_the_blocks_are_never_embedding_side(model_type, final_norm):
    """Norms named like embeddings, or outside the usual names, run after the blocks: they must train."""
    model = build_model(tiny_config(model_type))
    rt = apply_freeze(model, FreezeConfig(num_frozen_layers=2))
    assert rt.parts.final_norm_path == final_norm
    assert all(p.requires_grad for p in model.get_submodule(final_norm).parameters())
    assert not any(n == final_norm or n.startswith(final_norm + ".") for n, _ in rt.parts.embedding_side)


def test_input_embedding_outside_the_blocks_parent_is_frozen():
    """megatron-bert keeps its embeddings in bert.embeddings, not in the block list's parent."""
    model = build_model(tiny_config("megatron-bert"))
    rt = apply_freeze(model, FreezeConfig(num_frozen_layers=2))
    assert not model.get_input_embeddings().weight.requires_grad
    assert "bert.embeddings.position_embeddings.weight" in rt.report.extra_frozen


def test_bare_parameters_feeding_the_boundary_are_frozen_and_reported():
    """Zaya's input_hidden_states_scale/bias live on the base model itself and act before block 0."""
    model = build_model(tiny_config("zaya"))
    report = apply_freeze(model, FreezeConfig(num_frozen_layers=2)).report
    for name in ("model.input_hidden_states_scale", "model.input_hidden_states_bias"):
        assert not model.get_parameter(name).requires_grad
        assert "feeds the boundary" in report.extra_frozen[name]
        assert f"ALSO FROZEN {name}" in str(report)


def test_modules_between_embedding_and_block0_are_stated(caplog):
    model = build_model(tiny_config("bloom"))
    with caplog.at_level("WARNING", logger="fastfreeze.freezing"):
        report = apply_freeze(model, FreezeConfig(num_frozen_layers=2)).report
    assert "runs before block 0" in report.extra_frozen["transformer.word_embeddings_layernorm"]
    assert "transformer.word_embeddings_layernorm" in caplog.text


@pytest.mark.parametrize("model_type", ["ernie4_5_moe", "afmoe"])
def test_freezing_never_unfreezes_what_the_model_keeps_frozen(model_type):
    model = build_model(tiny_config(model_type))
    kept = {n for n, p in model.named_parameters() if not p.requires_grad}
    assert kept  # router statistics the model keeps frozen on purpose
    apply_freeze(model, FreezeConfig(num_frozen_layers=1))
    assert all(not model.get_parameter(n).requires_grad for n in kept)


def test_user_frozen_suffix_parameter_stays_frozen():
    model = make_model("llama")
    model.model.norm.weight.requires_grad_(False)
    report = freeze_bottom_layers(model, 2)
    assert not model.model.norm.weight.requires_grad and "model.norm" not in report.trainable_modules


def test_looped_blocks_are_refused():
    """A forward that runs every block twice (an invalid Dory-style config) has no frozen prefix."""
    model = make_model("llama")
    layers = model.model.layers
    model.model.layers = torch.nn.ModuleList([*layers, *layers])
    model.config.num_hidden_layers = 8
    with pytest.raises(UnsupportedModelError, match="do not each run once"):
        resolve(model)
