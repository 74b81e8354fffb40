"""fastfreeze.cache.store: the backend contract (a third backend needs nothing else) and the memory store: bounded, counted, copies."""
from __future__ import annotations

import pytest
import torch

import fastfreeze.config as ff_config
from fastfreeze import FreezeConfig
from fastfreeze.cache import BACKENDS, MemoryCache, PrefixCache
from tests._helpers import cache_rows as rows
from tests.parity.harness import run_arm

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


class DictCache(PrefixCache):
    """A third backend written against the contract alone: the five abstract members and a kind, nothing else."""

    kind = "dict"

    def __init__(self, fingerprint, max_bytes=None, dtype=None):
        super().__init__(fingerprint, max_bytes, dtype)
        self.rows = {}

    def _lookup(self, key):
        return self.rows.get(key)

    def _has(self, key):
        return key in self.rows

    def _store(self, key, value):
        if self.max_bytes is not None and self.nbytes + value.nbytes > self.max_bytes:
            return False
        self.rows[key] = value
        return True

    def __len__(self):
        return len(self.rows)

    @property
    def nbytes(self):
        return sum(v.nbytes for v in self.rows.values())


@pytest.fixture
def dict_backend():
    """DictCache is plugged in as a new backend is: by defining it (its `kind` registered it, nothing else)."""
    assert BACKENDS["dict"] is DictCache and ff_config.CACHE_BACKENDS is BACKENDS
    FreezeConfig(num_frozen_layers=2, cache="dict")  # selectable by name


def test_a_third_backend_trains_exactly_like_the_memory_cache(tmp_path, dict_backend):
    # Both epochs, the eval, the epoch-end flush/refresh and cache_summary() go through the backend.
    runs = {kind: run_arm("llama", 2, "ff", str(tmp_path / kind), steps=8, pad_to=12,
                          freeze_config=FreezeConfig(num_frozen_layers=2, cache=kind))
            for kind in ("memory", "dict")}
    mem, new = runs["memory"], runs["dict"]
    assert isinstance(new["trainer"].prefix_cache.cache, DictCache)
    # Exact, not close: both stores hand back the same bytes for the same rows in the same order.
    assert len(new["losses"]) == 16 and new["losses"] == mem["losses"]
    assert new["eval_loss"] == mem["eval_loss"]
    assert all(torch.equal(new["params"][n], p) for n, p in mem["params"].items())
    got, want = new["trainer"].cache_summary(), mem["trainer"].cache_summary()
    assert (got.kind, got.path, got.writable) == ("dict", None, True)
    assert (got.entries, got.bytes, got.hits, got.misses) == (want.entries, want.bytes, want.hits, want.misses)
    assert got.hits >= 32 and new["trainer"].prefix.prefix_calls == mem["trainer"].prefix.prefix_calls == 8 + 2


def test_a_third_backend_counts_hits_made_in_dataloader_workers():
    cache = DictCache("fp")
    rows = {"a": torch.randn(2, H), "b": torch.randn(3, H)}
    cache.put_many(list(rows), list(rows.values()))
    loader = torch.utils.data.DataLoader(["a", "b", "z"], batch_size=1, num_workers=1,
                                         collate_fn=lambda keys: cache.get_many(keys))
    got = [batch[0] for batch in loader]
    assert torch.equal(got[0], rows["a"]) and torch.equal(got[1], rows["b"]) and got[2] is None
    assert (cache.hits, cache.misses) == (2, 1)  # counted in the worker, seen here


def test_an_incomplete_backend_fails_at_construction_naming_what_is_missing(tmp_path, dict_backend, monkeypatch):
    class NoSize(DictCache):
        nbytes = PrefixCache.nbytes  # the abstract one: as if the backend had not written it

    class NoKind(DictCache):
        kind = None

    with pytest.raises(TypeError, match="nbytes"):
        NoSize("fp")
    with pytest.raises(TypeError, match="kind"):
        NoKind("fp")
    # Through the trainer: the error comes when the trainer is built, before any step.
    from datasets import Dataset

    from tests._helpers import make_model, make_rows, pad_collator
    from tests.parity.harness import FFTrainer, training_args

    monkeypatch.setitem(BACKENDS, "dict", NoSize)
    with pytest.raises(TypeError, match="nbytes"):
        FFTrainer(model=make_model("llama"), args=training_args(str(tmp_path / "o"), steps=1),
                  train_dataset=Dataset.from_list(make_rows(4)), data_collator=pad_collator(),
                  freeze_config=FreezeConfig(num_frozen_layers=2, cache="dict"))


def test_a_kind_names_one_backend():
    with pytest.raises(TypeError, match="'memory' is taken by fastfreeze.cache.store.MemoryCache"):
        class Impostor(DictCache):
            kind = "memory"
    assert BACKENDS["memory"] is MemoryCache
    with pytest.raises(ff_config.FreezeConfigError, match="choose one of None, 'memory', 'disk'"):
        FreezeConfig(num_frozen_layers=2, cache="redis")
