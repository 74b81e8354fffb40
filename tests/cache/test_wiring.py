"""fastfreeze.cache.wiring: opening the configured store, and the fingerprint of everything the boundary depends on."""
from __future__ import annotations

import os
import warnings

import pytest
import torch

from fastfreeze import FreezeConfig, apply_freeze
from fastfreeze.cache import BACKENDS, DiskCache, MemoryCache, open_cache
from fastfreeze.config import CACHE_BACKENDS
from fastfreeze.cache.wiring import compute_fingerprint
from tests._helpers import make_model
from tests.parity.harness import run_arm


def test_open_cache_validation(tmp_path):
    with pytest.raises(ValueError, match="cache_dir"):
        open_cache("disk", "fp")
    with pytest.raises(ValueError, match="'memory' or 'disk'"):
        open_cache("ram", "fp")
    with pytest.raises(ValueError, match="safe directory name"):
        DiskCache(tmp_path, "../escape")
    with pytest.raises(ValueError, match="max_bytes"):
        MemoryCache("fp", max_bytes=0)
    assert isinstance(open_cache("memory", "fp"), MemoryCache)


def test_every_kind_the_config_accepts_opens_its_backend(tmp_path):
    assert {"memory", "disk"} <= set(BACKENDS) and BACKENDS is CACHE_BACKENDS  # one table, config validates on it
    for kind, backend in BACKENDS.items():
        cache = open_cache(kind, "fp", cache_dir=str(tmp_path))
        assert type(cache) is backend and backend.kind == kind == cache.summary().kind
    with pytest.raises(ValueError, match="do not apply to cache kind 'memory'"):
        open_cache("memory", "fp", strict=True)


def test_fingerprint_changes_with_weights_dtype_and_attention():
    def fp(model, **kw):
        rt = apply_freeze(model, FreezeConfig(num_frozen_layers=2, **kw))
        return compute_fingerprint(model, rt.prefix, rt.config, rt.kernel_set)

    base = fp(make_model("llama"))
    assert fp(make_model("llama")) == base  # deterministic
    m = make_model("llama")
    with torch.no_grad():
        m.model.layers[1].mlp.up_proj.weight[0, 0] += 1e-3
    assert fp(m) != base
    m = make_model("llama")
    with torch.no_grad():
        m.model.layers[3].mlp.up_proj.weight[0, 0] += 1.0  # a suffix weight: the prefix output is unchanged
    assert fp(m) == base
    assert fp(make_model("llama", dtype=torch.bfloat16)) != base
    assert fp(make_model("llama", attn="sdpa")) != base


def test_unwritable_cache_dir_trains_without_cache(tmp_path):
    if os.geteuid() == 0:
        bad = "/proc/fastfreeze-cache"  # not creatable even for root
    else:
        bad = str(tmp_path / "ro"); os.makedirs(bad); os.chmod(bad, 0o500)
    cfg = FreezeConfig(num_frozen_layers=2, cache="disk", cache_dir=bad)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        res = run_arm("llama", 2, "ff", str(tmp_path / "o"), steps=2, freeze_config=cfg, evaluate=False)
    assert res["trainer"].prefix_cache is None
    assert any("cache disabled" in str(w.message) for w in caught)
    assert len(res["losses"]) == 4
