"""apply_freeze: validates the config against the model, freezes, probes, installs kernels and the prefix."""
from __future__ import annotations

import pytest

from fastfreeze import FreezeConfig, FreezeConfigError, apply_freeze
from tests._helpers import make_model


def test_k_larger_than_depth():
    with pytest.raises(FreezeConfigError, match="0..4"):
        apply_freeze(make_model("llama"), FreezeConfig(num_frozen_layers=5))


def test_freeze_embeddings_false_is_plain_freeze():
    model = make_model("llama")
    rt = apply_freeze(model, FreezeConfig(num_frozen_layers=2, freeze_embeddings=False))
    assert rt.prefix is None and model.model.embed_tokens.weight.requires_grad
    assert not any(p.requires_grad for p in model.model.layers[1].parameters())
