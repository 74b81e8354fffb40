"""apply_freeze: validates the config against the model, freezes, probes, installs kernels and the prefix."""
from __future__ import annotations

import pytest
import torch

from fastfreeze import FreezeConfig, FreezeConfigError, UnsupportedModelError, apply_freeze
from fastfreeze import runtime as runtime_mod
from fastfreeze.runtime import complete_freeze, prepare_freeze
from tests._helpers import make_model


def test_k_larger_than_depth():
    with pytest.raises(FreezeConfigError, match="0..4"):
        apply_freeze(make_model("llama"), FreezeConfig(num_frozen_layers=5))


def test_freeze_embeddings_false_is_plain_freeze():
    model = make_model("llama")
    rt = apply_freeze(model, FreezeConfig(num_frozen_layers=2, freeze_embeddings=False))
    assert rt.prefix is None and model.model.embed_tokens.weight.requires_grad
    assert not any(p.requires_grad for p in model.model.layers[1].parameters())


def _zero3_engine_model():
    """A model marked as a ZeRO-3 engine leaves it (its data stays whole, so forwards run on CPU)."""
    model = make_model("llama")
    model.model.layers[3].mlp.up_proj.weight.ds_id = 7  # a partitioned weight (zero.Init)
    model.model.ds_recompute_parameters = set()  # the engine hooked the modules (deepspeed.initialize)
    return model


def test_zero3_engine_refuses_explicit_triton_kernels_naming_what_works(monkeypatch):
    model = _zero3_engine_model()
    runtime = prepare_freeze(model, FreezeConfig(num_frozen_layers=2, kernels="triton"))
    monkeypatch.setattr(runtime_mod, "resolve_kernel_set", lambda *a, **k: "triton")  # as on a GPU
    with pytest.raises(UnsupportedModelError, match=r"kernels='triton'.*ZeRO-3.*'auto'"):
        complete_freeze(runtime, torch.device("cpu"))


def test_zero3_engine_runs_torch_ops_where_auto_would_pick_triton(monkeypatch):
    model = _zero3_engine_model()
    runtime = prepare_freeze(model, FreezeConfig(num_frozen_layers=2))
    monkeypatch.setattr(runtime_mod, "resolve_kernel_set", lambda *a, **k: "triton")  # as on a GPU
    complete_freeze(runtime, torch.device("cpu"))
    assert runtime.kernel_set == runtime.report.kernel_set == "torch"
    assert any(n.startswith("DeepSpeed ZeRO-3: torch ops") for n in runtime.report.notes)
    assert any(n.startswith("DeepSpeed ZeRO-3: prefix trace and probe ran at train start") for n in runtime.report.notes)
