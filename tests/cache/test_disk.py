"""fastfreeze.cache.disk: memory-mapped shards shared across processes; bounds, corruption, write failures."""

import os
import subprocess
import sys
import warnings

import pytest
import torch

from fastfreeze.cache import (
    CacheWarning,
    CacheWriteError,
    open_cache,
    prefix_fingerprint,
)
from fastfreeze.cache import CacheCorruptError, DiskCache, MemoryCache
from tests._helpers import cache_rows as rows, fingerprint_tensors as _tensors

H = 8




# ---------------------------------------------------------------- fingerprint


# ---------------------------------------------------------------- memory


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


def test_refresh_loads_shards_another_process_published(tmp_path):
    """What the trainer does after the epoch-end barrier: `refresh()` lists the directory now, whatever
    the refresh interval and the directory's mtime say; before it, the reader's index lacks the rows."""
    reader, writer = DiskCache(tmp_path, "fp", refresh_interval=3600), DiskCache(tmp_path, "fp")
    reader._mtime_racy = False  # as if the last listing were old enough for mtime to be trusted
    reader._dir_mtime = os.stat(reader.path).st_mtime_ns
    data = rows(3, seed=4)
    writer.put_many(list(data), list(data.values()))
    writer.flush()
    os.utime(reader.path, ns=(reader._dir_mtime, reader._dir_mtime))  # a coarse clock: mtime unchanged
    assert not any(k in reader._index for k in data)
    reader.refresh()
    assert all(torch.equal(reader.get(k), v) for k, v in data.items())
    MemoryCache("fp").refresh()  # per process: nothing to look for


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
    assert not [n for n in os.listdir(tmp_path / "fp") if ".tmp" in n]  # no litter (any temporary name)
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
