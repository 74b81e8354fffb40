"""freeze_bottom_layers, FreezeConfig validation, family resolution and the bad-input errors."""
from __future__ import annotations

import pytest
import torch
import transformers

from fastfreeze import FreezeConfig, FreezeConfigError, apply_freeze, freeze_bottom_layers
from tests._helpers import make_model


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


# ------------------------------------------------------------------ discovery by execution order
from fastfreeze.testing.tiny_models import build_model, tiny_config  # noqa: E402


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
    with caplog.at_level("WARNING", logger="fastfreeze.freeze"):
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
