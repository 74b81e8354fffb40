"""Disk store for the prefix cache: append-only, checksummed, memory-mapped shards.

Layout under ``cache_dir/<fingerprint>/``::

    shard-<pid>-<uuid>.bin    raw row bytes in the cache dtype, rows concatenated, no padding
    shard-<pid>-<uuid>.json   manifest: format/version, fingerprint, dtype, hidden, data size,
                              crc32 of the data, entries {key: [byte_offset, n_rows, hidden]}
    quarantine/               shards found corrupt, renamed aside (never read again)

A shard exists only once its manifest exists: data and manifest are each written atomically
(`fastfreeze._io`: a hidden temporary name in the same directory, fsynced, published with
``os.replace``), the manifest last, so a reader never sees a half-written shard. Writers use
unique names (pid + uuid), so concurrent processes (DDP ranks, a later task's run) never collide;
a key stored twice is harmless.
"""

from __future__ import annotations

import contextlib
import json
import logging
import mmap
import os
import re
import time
import uuid
import warnings
import zlib
from dataclasses import dataclass, field

import torch

from .. import _io
from .store import CacheWarning, CacheWriteError, PrefixCache, resolve_dtype

__all__ = ["CacheCorruptError", "DiskCache"]

logger = logging.getLogger(__name__)

FORMAT = "fastfreeze-prefix-cache"
FORMAT_VERSION = 1
_CRC_CHUNK = 16 << 20
_FP_RE = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9_.-]{0,127}")


class CacheCorruptError(RuntimeError):
    """A shard failed its size/checksum/format check and the cache was opened with ``strict=True``."""


@dataclass
class _Shard:
    name: str
    dtype: torch.dtype
    hidden: int
    data_bytes: int
    crc32: int
    entries: dict  # key -> (byte offset, n_rows)
    verified: bool = False
    buf: torch.Tensor | None = field(default=None, repr=False)  # uint8 view of the mmap

    def __getstate__(self):
        # An mmap is process-local (and pickling its tensor would copy the whole file): reopen lazily.
        state = dict(self.__dict__)
        state["buf"] = None
        return state


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).replace("torch.", "")


class DiskCache(PrefixCache):
    """Prefix cache on disk (a :class:`~fastfreeze.cache.store.PrefixCache` backend), shared by every
    process that opens the same ``cache_dir`` and fingerprint.

    Puts are buffered in memory and written as one shard when ``shard_bytes`` accumulate or on
    :meth:`flush` (call it at the end of a pass; pending rows are served from memory meanwhile and
    are not seen by other processes or by pickled copies). Reads memory-map the shard and return
    zero-copy row views (treat as read-only). A shard's size and crc32 are verified the first time
    this process (or the parent it was forked/pickled from) opens it: a full read of its data (crc32,
    ~6 GB/s in memory here). A corrupt shard is quarantined with a :class:`CacheWarning` and its rows become
    misses (the trainer recomputes them), or raises :class:`CacheCorruptError` with ``strict=True``.
    Shards written by other processes are picked up on a miss (directory mtime check, and a full
    listing at most every ``refresh_interval`` seconds). An unwritable directory raises
    :class:`CacheWriteError` at open; a write failure later (disk full) warns once, disables writes
    and keeps serving what exists. ``max_bytes`` bounds the data bytes this process sees in the
    directory plus its pending rows (concurrent writers can each add up to their pending buffer).

    Usage: ``cache = DiskCache("/scratch/ff", fp, dtype=torch.bfloat16); ...; cache.flush()``
    """

    kind = "disk"

    def __init__(
        self,
        cache_dir,
        fingerprint: str,
        max_bytes: int | None = None,
        dtype=None,
        shard_bytes: int = 256 << 20,
        strict: bool = False,
        readonly: bool = False,
        refresh_interval: float = 5.0,
    ):
        super().__init__(fingerprint, max_bytes, dtype)
        if not _FP_RE.fullmatch(fingerprint):
            raise ValueError(
                f"fingerprint {fingerprint!r} is not a safe directory name; use prefix_fingerprint()"
            )
        if not isinstance(shard_bytes, int) or shard_bytes <= 0:
            raise ValueError(f"shard_bytes must be a positive int, got {shard_bytes!r}")
        self.path = os.path.join(os.path.abspath(os.path.expanduser(os.fspath(cache_dir))), fingerprint)
        self.shard_bytes = shard_bytes
        self.strict = strict
        self.refresh_interval = float(refresh_interval)
        self.writable = not readonly
        self._shards: dict[str, _Shard] = {}
        self._index: dict[str, str] = {}  # key -> shard name
        self._bad: set[str] = set()  # shard names never to load again
        self._pending: dict[str, torch.Tensor] = {}
        self._pending_bytes = 0
        self._disk_bytes = 0
        self._dir_mtime: int | None = None
        self._last_list = 0.0
        self._mtime_racy = True
        if readonly:
            if not os.path.isdir(self.path):
                raise FileNotFoundError(f"read-only prefix cache {self.path} does not exist")
        else:
            self._probe_writable()
        self._refresh(force=True)

    @classmethod
    def open(cls, fingerprint: str, cache_dir=None, max_bytes: int | None = None, dtype=None, **options) -> "DiskCache":
        """`open_cache`'s way in: ``cache_dir`` is required; `options` are the constructor's keywords.
        Usage: ``cache = DiskCache.open(fp, cache_dir="/scratch/ff", strict=True)``"""
        if cache_dir is None:
            raise ValueError("a disk cache needs cache_dir (e.g. FreezeConfig(cache_dir='...'))")
        return cls(cache_dir, fingerprint, max_bytes=max_bytes, dtype=dtype, **options)

    # -- opening ---------------------------------------------------------------------------------
    def _probe_writable(self) -> None:
        probe = os.path.join(self.path, f".tmp-probe-{os.getpid()}-{uuid.uuid4().hex[:8]}")
        try:
            os.makedirs(self.path, exist_ok=True)
            with open(probe, "wb") as f:
                f.write(b"\0")
            os.remove(probe)
        except OSError as e:
            raise CacheWriteError(f"prefix cache directory {self.path} is not writable ({e.strerror or e}); pass a "
                                  "writable cache_dir, use cache='memory', or cache=None to train without a cache") from e

    def _refresh(self, force: bool = False) -> None:
        """Load manifests published since the last look (cheap: one stat unless the dir changed)."""
        try:
            mtime = os.stat(self.path).st_mtime_ns
        except OSError:
            return
        now = time.monotonic()
        interval = self.refresh_interval
        if self._mtime_racy:
            # The dir changed within the filesystem's timestamp granularity of our last listing, so
            # an unchanged mtime proves nothing (coarse clocks): relist, but at most every 0.1 s.
            interval = min(interval, 0.1)
        if not force and mtime == self._dir_mtime and now - self._last_list < interval:
            return
        self._dir_mtime, self._last_list = mtime, now
        self._mtime_racy = time.time_ns() - mtime < 2_000_000_000
        try:
            names = sorted(os.listdir(self.path))
        except OSError:
            return
        for fn in names:
            if fn.endswith(".json") and not fn.startswith("."):
                name = fn[: -len(".json")]
                if name not in self._shards and name not in self._bad:
                    self._load_manifest(name)

    def _load_manifest(self, name: str) -> None:
        try:
            with open(os.path.join(self.path, name + ".json"), encoding="utf-8") as f:
                m = json.load(f)
        except FileNotFoundError:  # quarantined by another process meanwhile
            return
        except (OSError, ValueError) as e:
            return self._corrupt(name, f"unreadable manifest ({e})")
        try:
            if m.get("format") != FORMAT:
                return self._corrupt(name, f"not a prefix-cache manifest (format {m.get('format')!r})")
            if m.get("version") != FORMAT_VERSION:
                # Written by another fastfreeze version: not ours to judge or move, just skip it.
                self._bad.add(name)
                msg = f"prefix cache shard {name} has format v{m.get('version')!r}, this reader v{FORMAT_VERSION}; skipped"
                warnings.warn(msg, CacheWarning, stacklevel=3)
                return None
            if m["fingerprint"] != self.fingerprint:
                return self._corrupt(name, "manifest belongs to another prefix fingerprint")
            dtype = resolve_dtype(m["dtype"])
            hidden, data_bytes = int(m["hidden"]), int(m["data_bytes"])
            esize = torch.empty(0, dtype=dtype).element_size()
            entries = {}
            for key, (off, n, h) in m["entries"].items():
                if h != hidden or off < 0 or n < 0 or off + n * h * esize > data_bytes or off % esize:
                    return self._corrupt(name, f"entry {key} lies outside the data file")
                entries[key] = (int(off), int(n))
            shard = _Shard(name, dtype, hidden, data_bytes, int(m["crc32"]), entries)
        except (KeyError, TypeError, ValueError) as e:
            return self._corrupt(name, f"malformed manifest ({e!r})")
        if self.hidden is not None and hidden != self.hidden:
            return self._corrupt(name, f"hidden size {hidden} != {self.hidden}")
        try:
            size = os.path.getsize(os.path.join(self.path, name + ".bin"))
        except FileNotFoundError:
            return self._corrupt(name, "data file missing")
        if size != data_bytes:
            return self._corrupt(name, f"data file is {size} bytes, manifest says {data_bytes} (truncated?)")
        self._add_shard(shard)

    def _add_shard(self, shard: _Shard) -> None:
        self._shards[shard.name] = shard
        self._disk_bytes += shard.data_bytes
        if self.hidden is None:
            self.hidden = shard.hidden
        if self.dtype is None:
            self.dtype = shard.dtype
        for key in shard.entries:
            self._index.setdefault(key, shard.name)

    def _corrupt(self, name: str, reason: str) -> None:
        where = os.path.join(self.path, name)
        if self.strict:
            raise CacheCorruptError(f"prefix cache shard {where}.bin is corrupt: {reason}. Delete it (or the whole "
                                    f"{self.path}) to rebuild, or open the cache with strict=False to quarantine it")
        qdir = os.path.join(self.path, "quarantine")
        stamp = f"{int(time.time())}-{uuid.uuid4().hex[:6]}"
        try:
            os.makedirs(qdir, exist_ok=True)
            for ext in (".json", ".bin"):  # manifest first: other readers stop seeing the shard
                try:
                    os.replace(where + ext, os.path.join(qdir, f"{name}{ext}.{stamp}"))
                except FileNotFoundError:
                    pass
        except OSError as e:  # read-only dir: still never serve it in this process
            reason += f"; could not move it aside ({e})"
        msg = f"prefix cache shard {where}.bin is corrupt ({reason}); quarantined, its rows will be recomputed"
        warnings.warn(msg, CacheWarning, stacklevel=3)
        logger.warning(msg)
        self._drop_shard(name)

    def _drop_shard(self, name: str) -> None:
        self._bad.add(name)
        shard = self._shards.pop(name, None)
        if shard is None:
            return
        self._disk_bytes -= shard.data_bytes
        lost = [k for k in shard.entries if self._index.get(k) == name]
        for k in lost:
            del self._index[k]
        if lost:  # a key may also live in another shard (duplicates are allowed)
            for other in self._shards.values():
                for k in other.entries:
                    self._index.setdefault(k, other.name)

    def _open(self, shard: _Shard) -> torch.Tensor | None:
        """The shard's bytes as a uint8 tensor over an mmap, verified once; None if it went bad."""
        if shard.buf is not None:
            return shard.buf
        path = os.path.join(self.path, shard.name + ".bin")
        try:
            if os.path.getsize(path) != shard.data_bytes:
                self._corrupt(shard.name, f"data file is no longer {shard.data_bytes} bytes")
                return None
            if shard.data_bytes == 0:
                shard.buf = torch.empty(0, dtype=torch.uint8)
                return shard.buf
            with open(path, "rb") as f:
                # ACCESS_COPY: a private mapping, so no write through a returned view can reach the file.
                mm = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_COPY)
        except FileNotFoundError:  # quarantined by another process
            self._drop_shard(shard.name)
            return None
        if not shard.verified:
            crc, view = 0, memoryview(mm)
            for start in range(0, shard.data_bytes, _CRC_CHUNK):
                crc = zlib.crc32(view[start : start + _CRC_CHUNK], crc)
            view.release()
            if crc != shard.crc32:
                self._corrupt(shard.name, "crc32 mismatch (bytes changed on disk)")
                return None
            shard.verified = True
        shard.buf = torch.frombuffer(mm, dtype=torch.uint8)
        return shard.buf

    def refresh(self) -> None:
        """Load every shard published so far (the trainer calls it after an epoch-end barrier)."""
        self._refresh(force=True)

    # -- store interface -------------------------------------------------------------------------
    def _lookup(self, key: str) -> torch.Tensor | None:
        row = self._pending.get(key)
        if row is not None:
            return row
        if key not in self._index:
            self._refresh()
        for _ in range(4):  # a corrupt shard re-points the key to a duplicate, if any
            name = self._index.get(key)
            if name is None:
                return None
            shard = self._shards[name]
            buf = self._open(shard)
            if buf is not None:
                off, n = shard.entries[key]
                esize = shard.dtype.itemsize
                return buf[off : off + n * shard.hidden * esize].view(shard.dtype).view(n, shard.hidden)
        return None

    def _has(self, key: str) -> bool:
        if key in self._pending or key in self._index:
            return True
        self._refresh()
        return key in self._index

    def _store(self, key: str, value: torch.Tensor) -> bool:
        if not self.writable:
            return False
        size = value.numel() * value.element_size()
        if self.max_bytes is not None and self._disk_bytes + self._pending_bytes + size > self.max_bytes:
            return False
        self._pending[key] = value
        self._pending_bytes += size
        if self._pending_bytes >= self.shard_bytes:
            self.flush()
        return True

    def __len__(self) -> int:
        self._refresh()
        return len(self._index) + sum(1 for k in self._pending if k not in self._index)

    @property
    def nbytes(self) -> int:
        return self._disk_bytes + self._pending_bytes

    # -- writing ---------------------------------------------------------------------------------
    def flush(self) -> None:
        """Write pending rows as one shard (atomic publish); on OSError warn once and disable writes."""
        if not self._pending or not self.writable:
            return
        rows = list(self._pending.items())
        dtype, hidden = rows[0][1].dtype, rows[0][1].shape[1]
        name = f"shard-{os.getpid()}-{uuid.uuid4().hex[:16]}"
        final = os.path.join(self.path, name)
        entries, off, crc = {}, 0, 0
        try:
            with _io.atomic_file(final + ".bin", "wb") as f:
                for key, row in rows:
                    if row.dtype != dtype or row.shape[1] != hidden:
                        raise ValueError("pending rows mix dtypes or hidden sizes")  # bug guard
                    raw = row.reshape(-1).view(torch.uint8).numpy()
                    f.write(raw)
                    crc = zlib.crc32(raw, crc)
                    entries[key] = [off, int(row.shape[0]), int(hidden)]
                    off += raw.nbytes
            manifest = {
                "format": FORMAT,
                "version": FORMAT_VERSION,
                "fingerprint": self.fingerprint,
                "dtype": _dtype_name(dtype),
                "hidden": int(hidden),
                "data_bytes": off,
                "crc32": crc,
                "entries": entries,
            }
            _io.write_json(final + ".json", manifest, separators=(",", ":"))  # publish: the shard exists now
        except OSError as e:
            with contextlib.suppress(OSError):
                os.remove(final + ".bin")  # data without a manifest is never read; don't leave it
            self._disable_writes(e)
            return
        shard = _Shard(name, dtype, int(hidden), off, crc, {k: (o, n) for k, (o, n, _) in entries.items()})
        shard.verified = True  # we just wrote and fsynced these exact bytes
        self._add_shard(shard)
        self._pending.clear()
        self._pending_bytes = 0

    def _disable_writes(self, exc: OSError) -> None:
        self.writable = False
        msg = (
            f"prefix cache: writing to {self.path} failed ({exc}); further cache writes are disabled "
            f"and training goes on, serving the {len(self)} entries that exist. Free disk space or "
            "fix permissions, then rerun to fill the cache"
        )
        warnings.warn(msg, CacheWarning, stacklevel=3)
        logger.warning(msg)

    def __getstate__(self):
        # Pending rows stay with the writer (call flush() before starting workers so they see them).
        state = dict(self.__dict__)
        state["_pending"] = {}
        state["_pending_bytes"] = 0
        return state
