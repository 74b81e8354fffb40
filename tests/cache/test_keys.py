"""fastfreeze.cache.keys: content keys of examples (padding and positions) and the prefix fingerprint that scopes them."""
from __future__ import annotations

import pytest
import torch

from fastfreeze.cache import batch_keys, example_key, prefix_fingerprint
from tests._helpers import fingerprint_tensors as _tensors


def test_right_padding_key_equals_unpadded():
    ids = torch.tensor([11, 12, 13])
    unpadded = batch_keys(ids[None])
    padded = batch_keys(torch.tensor([[11, 12, 13, 0, 0]]), torch.tensor([[1, 1, 1, 0, 0]]))
    assert unpadded == padded == [example_key(ids, torch.arange(3))]


def test_left_padding_changes_key_unless_positions_given():
    right = batch_keys(torch.tensor([[11, 12, 13, 0]]), torch.tensor([[1, 1, 1, 0]]))
    left_mask = torch.tensor([[0, 1, 1, 1]])
    left_ids = torch.tensor([[0, 11, 12, 13]])
    # No position_ids: HF uses arange(T), so the real tokens sit at 1..3 and the state differs.
    assert batch_keys(left_ids, left_mask) != right
    # Explicit positions that restart at the first real token: same example, same key.
    pos = torch.tensor([[0, 0, 1, 2]])
    assert batch_keys(left_ids, left_mask, pos) == right


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
    with pytest.raises(ValueError, match=r"\[B, T\]"):
        batch_keys(torch.arange(3))
    with pytest.raises(ValueError, match="attention_mask"):
        batch_keys(torch.zeros(2, 3, dtype=torch.long), torch.ones(2, 4))


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
