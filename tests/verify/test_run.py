"""fastfreeze.verify.run: `verify` passes on correct training and fails when a component is deliberately wrong."""
from __future__ import annotations

import dataclasses
import math

import pytest
import torch

import fastfreeze.trainer as ff_trainer
from fastfreeze import FreezeConfig
from fastfreeze.verify import Tolerances, VerifyError, verify
from tests._helpers import assert_losses_close, inject_fault as _inject, make_model, make_rows, run_verify as _verify, shift_output as _shift_output

STEPS = 3

# ------------------------------------------------------------------------------------------ PASS
@pytest.mark.parametrize("family,extra", [("llama", {}), ("gpt_neox", {}), ("gpt2", {}),
                                          ("gemma2", {"untie_embeddings": True}),
                                          ("llama", {"kernels": "triton"}),  # Triton interpreter on CPU
                                          ("llama", {"freeze_embeddings": False})])  # not a prefix
def test_passes_on_families(family, extra):
    report = _verify(family, **extra)
    assert report.passed, str(report)
    assert report.verdict == "PASS" and "verdict: PASS" in str(report)
    assert len(report.reference.losses) == len(report.fastfreeze.losses) == STEPS
    assert all(math.isfinite(x) for x in report.reference.losses)
    # Embedding + 2 blocks frozen in both arms; the tied gemma2 head trains once untied (in both arms).
    assert report.reference.frozen == report.fastfreeze.frozen and len(report.fastfreeze.frozen) > 2
    assert ("model.embed_tokens.weight" in report.fastfreeze.frozen) == extra.get("freeze_embeddings", True) \
        or family in ("gpt_neox", "gpt2")
    if family == "gemma2":
        assert "lm_head.weight" not in report.fastfreeze.frozen
    assert report.fastfreeze.kernel_set == extra.get("kernels", "torch")
    assert report.param_max_rel <= report.tolerances.param_rtol


def test_memory_cache_run_reads_the_cache_in_epoch_two():
    report = _verify("llama", steps=4, rows=make_rows(32), cache="memory")
    assert report.passed, str(report)
    # 4 steps x 4 rows over 8 rows: epoch 2 (8 rows) must come from the cache.
    assert report.fastfreeze.cache["hits"] >= 8 and report.fastfreeze.cache["entries"] == 8
    assert "padded to one width" in str(report)


def test_bf16_uses_bf16_tolerance():
    model = make_model("llama", dtype=torch.bfloat16)
    report = verify(model, make_rows(8), FreezeConfig(num_frozen_layers=2), steps=2)
    assert report.dtype == "bf16" and report.tolerances == Tolerances.for_dtype("bf16", 2)
    assert report.passed, str(report)


def test_input_model_is_left_untouched():
    model = make_model("llama")
    before = {n: p.clone() for n, p in model.state_dict().items()}
    verify(model, make_rows(8), FreezeConfig(num_frozen_layers=2), steps=2)
    assert all(torch.equal(before[n], p) for n, p in model.state_dict().items())
    assert all(p.requires_grad for p in model.parameters())


# ------------------------------------------------------------------------------------------ FAIL
def test_fails_when_a_suffix_module_is_perturbed(monkeypatch):
    _inject(monkeypatch, lambda model, parts: _shift_output(parts.layers[3]))
    report = _verify("llama")
    assert not report.passed and report.verdict == "FAIL"
    assert any("micro-batch losses differ" in f for f in report.failures), report.failures


def test_fails_when_a_prefix_module_is_perturbed(monkeypatch):
    _inject(monkeypatch, lambda model, parts: _shift_output(parts.layers[0]))
    report = _verify("gpt2")
    assert not report.passed
    assert any("micro-batch losses differ" in f for f in report.failures)


def test_fails_when_a_frozen_weight_moves(monkeypatch):
    def nudge(model, parts):
        w = parts.layers[1].mlp.up_proj.weight

        def pre_hook(module, args):
            w.data.add_(1e-7)  # a "kernel" that writes into a frozen weight
        parts.layers[1].register_forward_pre_hook(pre_hook)
    _inject(monkeypatch, nudge)
    report = _verify("llama")
    assert "fastfreeze: frozen parameters changed: ['model.layers.1.mlp.up_proj.weight']" in report.failures
    assert "reference: frozen" not in " ".join(report.failures)


def test_fails_when_a_different_layer_set_is_frozen(monkeypatch):
    original = ff_trainer.prepare_freeze
    monkeypatch.setattr(ff_trainer, "prepare_freeze", lambda model, config: original(
        model, dataclasses.replace(config, num_frozen_layers=config.num_frozen_layers + 1)))
    report = _verify("llama")
    assert not report.passed
    assert any("froze different parameters" in f for f in report.failures)
    assert any("trainable parameters differ" in f for f in report.failures)


# ------------------------------------------------------------------------------------------ sequential / memory
@pytest.mark.parametrize("family,extra", [("llama", {}), ("gemma2", {"untie_embeddings": True})])
def test_sequential_gives_the_same_result(family, extra):
    both = _verify(family, **extra)
    seq = _verify(family, sequential=True, **extra)
    assert seq.passed and both.passed
    # sequential runs the same computation one arm at a time: bit-identical losses
    assert_losses_close(seq.reference.losses, both.reference.losses, rtol=0.0)
    assert_losses_close(seq.fastfreeze.losses, both.fastfreeze.losses, rtol=0.0)
    assert any("sequential" in n for n in seq.notes)


def test_bad_arguments():
    with pytest.raises(VerifyError, match="steps=0"):
        _verify("llama", steps=0)
    with pytest.raises(VerifyError, match="two epochs"):
        _verify("llama", steps=1, cache="memory")
    with pytest.raises(VerifyError, match="input_ids"):
        verify(make_model("llama"), [{"text": "hi"}], FreezeConfig(num_frozen_layers=1))
