"""The install-time probe: the fast path and the cache are refused, with the reason, whenever they would not
compute what the model computes; and it can fail (each refusal is shown on a real model or a mutation)."""
from __future__ import annotations

import pytest
import torch

from fastfreeze import FreezeConfig, UnsupportedModelError, apply_freeze
from fastfreeze import prefix as prefix_mod
from fastfreeze.testing.tiny_models import build_model, tiny_config
from tests._helpers import make_model


def _tiny(model_type: str):
    return build_model(tiny_config(model_type), seed=0)


def test_probe_passes_and_reports_its_cost():
    rt = apply_freeze(make_model("llama"), FreezeConfig(num_frozen_layers=2))
    assert rt.probe is not None and rt.probe.max_rel_diff == 0.0 and rt.cache_refusal is None
    assert rt.probe.trainable_tensors == sum(1 for p in rt.prefix.model.parameters() if p.requires_grad)
    assert any(n.startswith("probe: fast path ==") and " s (skip with" in n for n in rt.report.notes)
    assert rt.prefix.prefix_calls == 0 and rt.prefix.state.timings == []  # the probe's runs are not counted


def test_probe_can_be_skipped_explicitly():
    rt = apply_freeze(make_model("llama"), FreezeConfig(num_frozen_layers=2, probe=False))
    assert rt.probe is None and not any(n.startswith("probe:") for n in rt.report.notes)


def test_probe_keeps_rng_and_grads_untouched():
    model = make_model("llama")
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    apply_freeze(model, FreezeConfig(num_frozen_layers=2))
    assert torch.equal(torch.rand(3), expected)
    assert all(p.grad is None for p in model.parameters())


def test_fast_path_refused_when_the_prefix_computes_differently(monkeypatch):
    """Mutation: the no-grad prefix adds 1e-3 to its output (the reference path is untouched)."""
    original = prefix_mod._call_original

    def shifted(module, args, kwargs):
        out = original(module, args, kwargs)
        if not module._ff_state.bypass and module._ff_is_boundary_source:
            return out + 1e-3 if isinstance(out, torch.Tensor) else (out[0] + 1e-3, *out[1:])
        return out

    monkeypatch.setattr(prefix_mod, "_call_original", shifted)
    model = make_model("llama")
    with pytest.raises(UnsupportedModelError, match="no-grad prefix changes the result"):
        apply_freeze(model, FreezeConfig(num_frozen_layers=2))
    assert "_ff_state" not in model.model.layers[0].__dict__  # the refused prefix is removed again


def test_cache_refused_when_suffix_reads_the_embedding_output():
    """Zamba2's hybrid blocks read the word-embedding output besides the boundary: a cache hit would feed
    them a stand-in. Refused for the cache only, naming the module; the fast path without a cache stays."""
    with pytest.raises(UnsupportedModelError, match=r"cache refused.*model\.embed_tokens.*cache=None"):
        apply_freeze(_tiny("zamba2"), FreezeConfig(num_frozen_layers=2, cache="memory"))
    rt = apply_freeze(_tiny("zamba2"), FreezeConfig(num_frozen_layers=2))
    assert rt.prefix is not None and "model.embed_tokens" in rt.cache_refusal


def test_stand_in_detection_is_not_only_nan(monkeypatch):
    """With zeros as stand-ins (the training fill) the difference must still show on Zamba2."""
    from fastfreeze import probe

    monkeypatch.setattr(probe, "_STANDIN_FILL", 0.0)
    rt = apply_freeze(_tiny("zamba2"), FreezeConfig(num_frozen_layers=2))
    assert rt.cache_refusal is not None


@pytest.mark.parametrize("model_type, shape_word", [("deepseek_v4", "multi-stream"), ("gemma3n_text", "multi-stream"),
                                                    ("xlnet", "sequence-first")])
def test_cache_refused_for_boundaries_that_are_not_batch_seq_hidden(model_type, shape_word):
    rt = apply_freeze(_tiny(model_type), FreezeConfig(num_frozen_layers=2))
    assert rt.prefix is not None
    assert rt.cache_refusal and "not one [batch, seq, hidden]" in rt.cache_refusal and shape_word in rt.cache_refusal


def test_cache_refused_when_suffix_reads_a_blocks_extra_output():
    """Zaya's blocks return (hidden, residual) and the next block reads the residual."""
    rt = apply_freeze(_tiny("zaya"), FreezeConfig(num_frozen_layers=2))
    assert rt.cache_refusal and "besides the boundary" in rt.cache_refusal


@pytest.mark.parametrize("model_type", ["bloom", "megatron-bert", "roformer"])
def test_tuple_blocks_with_unread_extras_keep_the_cache(model_type):
    """Blocks returning (hidden, extras) whose extras the next block ignores: injection returns (boundary,
    None, ...) and the probe proves it changes nothing."""
    rt = apply_freeze(_tiny(model_type), FreezeConfig(num_frozen_layers=2, cache="memory"))
    assert rt.cache_refusal is None and rt.probe.max_rel_diff <= 1e-5


def test_gradient_statistics_see_what_a_full_comparison_sees():
    """The probe keeps 4 numbers per gradient (memory: docs/placement.md); they still tell a permuted,
    zeroed, rescaled or non-finite gradient from rounding."""
    from fastfreeze.probe import _grad_stats, _stats_diff

    g = torch.randn(3001, 7, generator=torch.Generator().manual_seed(0))
    ref = _grad_stats(g)
    assert ref.shape == (4,) and _stats_diff(_grad_stats(g.clone()), ref) == 0.0
    assert _stats_diff(_grad_stats(g.flatten().flip(0).view_as(g)), ref) > 0.1  # same norm and max, wrong places
    assert _stats_diff(_grad_stats(torch.zeros_like(g)), ref) >= 1.0
    assert 0.5e-3 < _stats_diff(_grad_stats(g * 1.001), ref) < 2e-3
    bad = g.clone()
    bad[5, 3] = float("nan")
    assert _stats_diff(_grad_stats(bad), ref) == float("inf")
    assert _stats_diff(_grad_stats(g + 1e-9 * torch.randn_like(g)), ref) < 1e-6  # rounding-sized noise passes


def test_probe_keeps_no_gradient_tensors(monkeypatch):
    """Each run's gradients are reduced as they come: what a run returns is the logits and 4 numbers per
    trainable tensor, never a gradient-sized tensor."""
    from fastfreeze import probe

    kept = []
    original = probe._forward_backward
    monkeypatch.setattr(probe, "_forward_backward", lambda *a: kept.append(original(*a)) or kept[-1])
    apply_freeze(make_model("llama"), FreezeConfig(num_frozen_layers=2))
    assert len(kept) >= 3 and all(t.shape == (4,) for run in kept for t in run[1:])
