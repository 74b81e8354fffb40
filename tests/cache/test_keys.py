"""fastfreeze.cache.keys: content keys of examples (padding and positions) and the prefix fingerprint that scopes them."""
from __future__ import annotations

import pytest
import torch

from fastfreeze.cache import example_key, prefix_fingerprint
from tests._helpers import fingerprint_tensors as _tensors


def test_key_changes_with_any_token_or_position():
    ids, pos = torch.tensor([5, 6, 7, 8]), torch.arange(4)
    base = example_key(ids, pos)
    for i in range(4):
        ids2, pos2 = ids.clone(), pos.clone()
        ids2[i] += 1
        pos2[i] += 10
        assert example_key(ids2, pos) != base
        assert example_key(ids, pos2) != base
    # Same numbers, different integer dtype: same content, same key.
    assert example_key(ids.int(), pos.short()) == base
    # Truncation is a different example.
    assert example_key(ids[:3], pos[:3]) != base


def test_key_bad_input():
    with pytest.raises(ValueError, match="equal length"):
        example_key(torch.arange(3), torch.arange(4))


def test_fingerprint_sensitivity():
    base = prefix_fingerprint(_tensors(), config={"a": 1, "b": [1, 2]}, dtype="float32")
    assert base == prefix_fingerprint(reversed(_tensors()), dtype="float32", config={"b": [1, 2], "a": 1})
    t = _tensors()
    t[1][1][2, 3] += 1e-6  # one weight element
    assert prefix_fingerprint(t, config={"a": 1, "b": [1, 2]}, dtype="float32") != base
    t = [(n, x.to(torch.bfloat16)) for n, x in _tensors()]  # tensor dtype
    assert prefix_fingerprint(t, config={"a": 1, "b": [1, 2]}, dtype="float32") != base
    assert prefix_fingerprint(_tensors(), config={"a": 1, "b": [1, 2]}, dtype="bfloat16") != base
    assert prefix_fingerprint(_tensors(), config={"a": 2, "b": [1, 2]}, dtype="float32") != base
    assert prefix_fingerprint(_tensors(), config={"a": 1, "b": [1, 2]}, dtype="float32", attn="sdpa") != base
    renamed = [("embed.weight2", _tensors()[0][1]), _tensors()[1]]
    assert prefix_fingerprint(renamed, config={"a": 1, "b": [1, 2]}, dtype="float32") != base


def test_fingerprint_meta_tensor_rejected():
    with pytest.raises(ValueError, match="meta"):
        prefix_fingerprint([("w", torch.empty(2, 2, device="meta"))])
