"""The family table and discovery: where embedding, blocks, norm and head live, decided by execution order; refusals."""
from __future__ import annotations

import pytest
import torch
import transformers

from fastfreeze import FreezeConfig, UnsupportedModelError, apply_freeze
from fastfreeze.testing.tiny_models import build_model, tiny_config
from fastfreeze.families import FAMILIES as TABLE
from fastfreeze.families import resolve
from tests._helpers import FAMILIES, make_model


@pytest.mark.parametrize("family", FAMILIES)
def test_resolve_every_family(family):
    parts = resolve(make_model(family))
    assert parts.num_layers == 4 and parts.final_norm is not None and parts.embedding_side


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


def test_looped_blocks_are_refused():
    """A forward that runs every block twice (an invalid Dory-style config) has no frozen prefix."""
    model = make_model("llama")
    layers = model.model.layers
    model.model.layers = torch.nn.ModuleList([*layers, *layers])
    model.config.num_hidden_layers = 8
    with pytest.raises(UnsupportedModelError, match="do not each run once"):
        resolve(model)


def test_one_table_holds_parts_and_kernel_facts():
    """Every family the tests build is in the table, whose kernel facts are ones fastfreeze.kernels knows."""
    assert set(FAMILIES) <= set(TABLE)
    for name, spec in TABLE.items():
        assert spec.rms_norm in (None, "llama", "gemma") and spec.swiglu in (None, "split", "fused"), name
        assert spec.swiglu is None or spec.rms_norm is not None, name  # SwiGLU families are RMSNorm families
    assert (TABLE["phi3"].swiglu, TABLE["gemma2"].rms_norm, TABLE["gpt2"].rms_norm) == ("fused", "gemma", None)



class _NeedsImages(transformers.LlamaForCausalLM):
    """A causal LM whose forward cannot run on token ids alone."""

    def forward(self, input_ids=None, pixel_values=None, **kwargs):
        if pixel_values is None:
            raise ValueError("pixel_values is required")
        return super().forward(input_ids=input_ids, **kwargs)


def test_a_model_that_needs_other_inputs_is_refused_saying_so_and_meta_weights_saying_meta():
    """The probe forward fails for two different reasons: the model wants more than token ids (its own
    error, and "needs other inputs"), or its weights are on meta (sdpa's mask reads a value): named as such."""
    with pytest.raises(UnsupportedModelError, match="pixel_values is required.*needs other inputs"):
        resolve(_NeedsImages(make_model("llama").config))
    cfg = make_model("llama", attn="sdpa").config
    with torch.device("meta"):
        model = transformers.LlamaForCausalLM(cfg)
    with pytest.raises(UnsupportedModelError, match=r"weights are on the meta device.*from_pretrained.*to_empty") as err:
        resolve(model)
    assert "other inputs" not in str(err.value) and "cpu_ram_efficient_loading" in str(err.value)
