"""fastfreeze.cache.store: the memory store: bounded, counted, stores copies in the cache dtype."""
from __future__ import annotations

import pytest
import torch

from fastfreeze.cache import MemoryCache
from tests._helpers import cache_rows as rows

H = 8


def test_memory_bound_never_exceeded_and_refusals_counted():
    data = rows(20)
    bound = 500
    cache = MemoryCache("fp", max_bytes=bound)
    accepted = 0
    for k, v in data.items():
        ok = cache.put(k, v)
        accepted += ok
        assert cache.summary().bytes <= bound
        assert (cache.get(k) is not None) == ok
    s = cache.summary()
    assert 0 < accepted < len(data)
    assert s.refused == len(data) - accepted
    assert s.entries == accepted and s.hits == accepted and s.misses == len(data) - accepted


def test_memory_roundtrip_copies_and_converts():
    v = torch.randn(3, H)
    cache = MemoryCache("fp", dtype=torch.bfloat16)
    assert cache.put_many(["a", "b"], [v, v * 2]) == 2
    v.zero_()  # the cache owns a copy
    got = cache.get("a")
    assert got.dtype == torch.bfloat16 and got.abs().sum() > 0
    assert "a" in cache and "z" not in cache and len(cache) == 2
    with pytest.raises(ValueError, match="hidden"):
        cache.put("c", torch.randn(2, H + 1))
    with pytest.raises(ValueError, match=r"\[n_tokens, hidden\]"):
        cache.put("c", torch.randn(H))
