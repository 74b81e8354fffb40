"""Tests of the prefix cache store: keys, fingerprint, memory bound, disk shards, corruption, failures."""

import os
import subprocess
import sys
import warnings

import pytest
import torch

from fastfreeze.cache import (
    CacheWarning,
    CacheWriteError,
    MemoryCache,
    batch_keys,
    example_key,
    open_cache,
    prefix_fingerprint,
)
from fastfreeze.cache_disk import CacheCorruptError, DiskCache

H = 8


def rows(n_rows=5, dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)
    out = {}
    for i in range(n_rows):
        n = 1 + (3 * i) % 7
        out[f"key{seed}-{i}"] = torch.randn(n, H, generator=g).to(dtype)
    return out


# ---------------------------------------------------------------- keys


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


# ---------------------------------------------------------------- fingerprint


def _tensors():
    g = torch.Generator().manual_seed(1)
    return [("embed.weight", torch.randn(16, 4, generator=g)), ("layers.0.w", torch.randn(4, 4, generator=g))]


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


# ---------------------------------------------------------------- memory


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


# ---------------------------------------------------------------- disk


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_disk_roundtrip_fresh_object_exact(tmp_path, dtype):
    data = rows(6, dtype)
    w = DiskCache(tmp_path, "fp1", dtype=dtype)
    assert w.put_many(list(data), list(data.values())) == 6
    assert w.get("key0-2") is not None  # pending rows are served before flush
    w.flush()
    assert not [n for n in os.listdir(tmp_path / "fp1") if n.startswith(".tmp")]
    r = DiskCache(tmp_path, "fp1")  # another "process": fresh object, nothing in memory
    assert len(r) == 6 and r.dtype == dtype
    for k, v in data.items():
        got = r.get(k)
        assert got.dtype == dtype and torch.equal(got, v)
    assert r.get("absent") is None
    s = r.summary()
    assert (s.hits, s.misses, s.entries) == (6, 1, 6)
    assert s.bytes == sum(v.numel() * v.element_size() for v in data.values())
    assert "disk" in str(s) and "6 entries" in str(s)


def test_subprocess_sees_shards_and_same_fingerprint(tmp_path):
    # One real second process (importing torch costs seconds, so it checks two things).
    data = rows(3)
    w = DiskCache(tmp_path, "fp1")
    w.put_many(list(data), list(data.values()))
    w.flush()
    code = (
        "import sys, torch; from fastfreeze.cache import open_cache, prefix_fingerprint as f;"
        f"c = open_cache('disk', 'fp1', cache_dir={str(tmp_path)!r});"
        "rows = c.get_many(sys.argv[1:] + ['nope']);"
        "print(c.summary().hits, c.summary().misses, float(sum(r.double().sum() for r in rows if r is not None)));"
        "g = torch.Generator().manual_seed(1);"
        "t = [('embed.weight', torch.randn(16, 4, generator=g)), ('layers.0.w', torch.randn(4, 4, generator=g))];"
        "print(f(t, config={'a': 1, 'b': [1, 2]}, dtype='float32'))"
    )
    out = subprocess.run([sys.executable, "-c", code, *data], capture_output=True, text=True, check=True)
    line1, fp = out.stdout.strip().splitlines()
    assert fp == prefix_fingerprint(_tensors(), config={"a": 1, "b": [1, 2]}, dtype="float32")
    hits, misses, total = line1.split()
    assert (int(hits), int(misses)) == (3, 1)
    assert float(total) == pytest.approx(sum(float(v.double().sum()) for v in data.values()), rel=1e-12)


def test_concurrent_writers_both_visible(tmp_path):
    # Both open before either writes: each must discover the other's shard on a miss.
    a, b = DiskCache(tmp_path, "fp"), DiskCache(tmp_path, "fp", refresh_interval=0)
    da, db = rows(4, seed=1), rows(4, seed=2)
    a.put_many(list(da), list(da.values()))
    b.put_many(list(db), list(db.values()))
    b.put("key1-0", da["key1-0"])  # duplicate key across shards is fine
    a.flush()
    b.flush()
    for cache in (a, b, DiskCache(tmp_path, "fp")):
        for k, v in {**da, **db}.items():
            assert torch.equal(cache.get(k), v)
    manifests = [n for n in os.listdir(tmp_path / "fp") if n.endswith(".json")]
    assert len(manifests) == 2


def test_disk_bound_and_auto_flush(tmp_path):
    data = rows(20)
    bound = 600
    c = DiskCache(tmp_path, "fp", max_bytes=bound, shard_bytes=100)
    accepted = sum(c.put(k, v) for k, v in data.items())
    c.flush()
    on_disk = sum(os.path.getsize(tmp_path / "fp" / n) for n in os.listdir(tmp_path / "fp") if n.endswith(".bin"))
    assert 0 < accepted < 20 and on_disk <= bound and c.summary().refused == 20 - accepted
    assert len([n for n in os.listdir(tmp_path / "fp") if n.endswith(".json")]) > 1  # shard_bytes split
    assert len(DiskCache(tmp_path, "fp")) == accepted


def _one_shard(tmp_path, data):
    w = DiskCache(tmp_path, "fp")
    w.put_many(list(data), list(data.values()))
    w.flush()
    (name,) = [n[:-4] for n in os.listdir(tmp_path / "fp") if n.endswith(".bin")]
    return tmp_path / "fp" / name


@pytest.mark.parametrize("damage", ["truncate", "flip"])
def test_corrupt_shard_quarantined_and_missed(tmp_path, damage):
    data = rows(4)
    shard = _one_shard(tmp_path, data)
    raw = bytearray(shard.with_suffix(".bin").read_bytes())
    if damage == "truncate":
        raw = raw[:-5]
    else:
        raw[len(raw) // 2] ^= 0x40
    shard.with_suffix(".bin").write_bytes(bytes(raw))

    with pytest.raises(CacheCorruptError, match="strict=False"):
        c = DiskCache(tmp_path, "fp", strict=True)
        c.get("key0-1")  # a flipped byte is found when the shard is first opened
    assert shard.with_suffix(".json").exists()  # strict reports, moves nothing

    with pytest.warns(CacheWarning, match="corrupt"):
        c = DiskCache(tmp_path, "fp")  # a wrong size is seen from the manifest, at open
        assert all(c.get(k) is None for k in data)  # a flipped byte at the first read
    assert c.summary().misses == 4 and len(c) == 0
    assert not shard.with_suffix(".json").exists() and not shard.with_suffix(".bin").exists()
    assert len(os.listdir(tmp_path / "fp" / "quarantine")) == 2
    # Rebuilt: the rows can be stored again and are served exactly.
    assert c.put_many(list(data), list(data.values())) == 4
    c.flush()
    fresh = DiskCache(tmp_path, "fp")
    assert all(torch.equal(fresh.get(k), v) for k, v in data.items())


def test_corrupt_manifest_detected(tmp_path):
    shard = _one_shard(tmp_path, rows(2))
    shard.with_suffix(".json").write_text('{"format": "fastfreeze-prefix-cache", "vers')
    with pytest.raises(CacheCorruptError):
        DiskCache(tmp_path, "fp", strict=True)
    with pytest.warns(CacheWarning):
        assert len(DiskCache(tmp_path, "fp")) == 0


def test_other_format_version_skipped_not_quarantined(tmp_path):
    shard = _one_shard(tmp_path, rows(2))
    text = shard.with_suffix(".json").read_text().replace('"version":1', '"version":99')
    shard.with_suffix(".json").write_text(text)
    with pytest.warns(CacheWarning, match="v99"):
        c = DiskCache(tmp_path, "fp", strict=True)
    assert len(c) == 0 and shard.with_suffix(".json").exists()


def test_unwritable_dir_raises(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(CacheWriteError, match="not writable"):
        DiskCache(blocker, "fp")
    with pytest.raises(CacheWriteError):
        open_cache("disk", "fp", cache_dir=blocker / "sub")


def test_write_failure_mid_run_disables_writes_keeps_reads(tmp_path, monkeypatch):
    first = rows(3, seed=1)
    c = DiskCache(tmp_path, "fp")
    c.put_many(list(first), list(first.values()))
    c.flush()

    real_fsync = os.fsync

    def full_disk(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", full_disk)
    second = rows(3, seed=2)
    c.put_many(list(second), list(second.values()))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        c.flush()
        c.flush()
        assert c.put("late", torch.randn(2, H)) is False
    assert len([w for w in caught if issubclass(w.category, CacheWarning)]) == 1  # warned once
    assert not c.summary().writable and "WRITES DISABLED" in str(c.summary())
    monkeypatch.setattr(os, "fsync", real_fsync)
    assert not [n for n in os.listdir(tmp_path / "fp") if n.startswith(".tmp")]  # no litter
    for k, v in first.items():
        assert torch.equal(c.get(k), v)
    assert len([n for n in os.listdir(tmp_path / "fp") if n.endswith(".json")]) == 1


def test_pickled_disk_cache_reopens_lazily(tmp_path):
    import pickle

    data = rows(3)
    c = DiskCache(tmp_path, "fp")
    c.put_many(list(data), list(data.values()))
    c.flush()
    assert c.get("key0-0") is not None  # opens the mmap in this object
    blob = pickle.dumps(c)
    assert len(blob) < 20_000  # no shard bytes travel in the pickle
    c2 = pickle.loads(blob)
    assert all(torch.equal(c2.get(k), v) for k, v in data.items())


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
