"""The boundary cache backend contract (:class:`PrefixCache`) and its in-memory backend: ``key -> [n_tokens, hidden]`` CPU rows, counted.

Usage::

    cache = MemoryCache(fp, max_bytes=8 << 30, dtype=torch.bfloat16)   # or DiskCache, see fastfreeze.cache.disk
    seg = segment_batch(batch["input_ids"], batch["attention_mask"])  # fastfreeze.cache.segments
    boundary = assemble(cache.get_many(seg.keys), seg, hidden, dtype)  # fastfreeze.cache.collator
    cache.put_many(seg.keys, [flat_boundary[i] for i in seg.index])    # [n_tokens, H] rows, one per segment
    cache.flush(); print(cache.summary())
"""

from __future__ import annotations

import abc
from dataclasses import dataclass
from typing import Sequence

import torch

from ..config import CACHE_BACKENDS

__all__ = ["CacheSummary", "CacheWarning", "CacheWriteError", "MemoryCache", "PrefixCache"]

# Hit/miss/refused counters live in a small shared-memory table with one row per DataLoader worker
# (row 0 = the main process), so counts made in forked or spawned workers reach the main process's
# summary() without cross-process races: each row has exactly one writer.
_COUNTER_SLOTS = 129


class CacheWriteError(OSError):
    """The cache directory cannot be written (raised at open time; later write failures only warn)."""


class CacheWarning(UserWarning):
    """A cache problem that was handled (corrupt shard quarantined, writes disabled)."""


@dataclass
class CacheSummary:
    """Counters of a cache; ``str()`` gives one printable line."""

    kind: str
    entries: int
    bytes: int
    hits: int
    misses: int
    refused: int
    fingerprint: str
    path: str | None = None
    writable: bool = True

    def __str__(self) -> str:
        looked = self.hits + self.misses
        rate = f" ({100.0 * self.hits / looked:.1f}% hit)" if looked else ""
        where = f", path {self.path}" if self.path else ""
        ro = "" if self.writable else ", WRITES DISABLED"
        return (
            f"prefix cache [{self.kind}] {self.entries:,} entries, {_human(self.bytes)}, "
            f"hits {self.hits:,} / misses {self.misses:,}{rate}, refused {self.refused:,}, "
            f"fingerprint {self.fingerprint[:12]}{where}{ro}"
        )


def _human(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.2f} {unit}"
        n /= 1024
    return f"{n} B"


def resolve_dtype(dtype) -> torch.dtype | None:
    """A torch floating dtype from a dtype or its name ("bfloat16"); None stays None."""
    if dtype is None or isinstance(dtype, torch.dtype):
        return dtype
    d = getattr(torch, str(dtype).replace("torch.", ""), None)
    if not isinstance(d, torch.dtype) or not d.is_floating_point:
        raise ValueError(f"cache dtype {dtype!r} is not a torch floating dtype (e.g. 'bfloat16')")
    return d


def _counter_slot() -> int:
    info = torch.utils.data.get_worker_info()
    return 0 if info is None else 1 + info.id % (_COUNTER_SLOTS - 1)


class PrefixCache(abc.ABC):
    """The cache backend contract: the one base class every store implements (memory, disk, yours).

    A backend stores ``key -> [n_tokens, hidden]`` CPU rows (``key``: a segment's content hash,
    ``fastfreeze.cache.keys.example_key``). It names itself (``kind``) and implements the five abstract
    members below, nothing else; the base class does the rest (validation, the cache dtype, one host copy per batch, the
    hit/miss/refused counters, ``in``, :meth:`summary`). The rest of fastfreeze uses only the public
    members listed under "what fastfreeze calls". Instantiating a backend that misses an abstract
    member (or ``kind``) raises ``TypeError`` naming it, at construction, not mid-training.

    What a backend implements:
        kind: class attribute, a short name for summaries and logs (``"memory"``, ``"disk"``).
        _lookup(key): the stored row (a view is fine: callers treat it as read-only) or None.
        _has(key): whether `key` is stored (without counting a hit or a miss).
        _store(key, row): keep `row`, a CPU, contiguous, cache-dtype tensor the backend now owns, for a
            key not present yet; return False to refuse it (over ``max_bytes``, writes disabled): the base
            class counts the refusal.
        __len__(): entries stored; nbytes: their data bytes (what ``max_bytes`` bounds).

    What a backend may override (defaults fit a store private to one process):
        flush(): publish rows this process stored to the other processes that share the store (DDP
            ranks, DataLoader workers started later, later runs). Default: nothing to publish.
        refresh(): load what other processes published since the last look. Default: nothing.
        path: where the store lives, or None (shown in summaries). writable: False once writes are
            disabled (a disk-full store keeps serving reads); the over-the-cap warning is then skipped.
        open(fingerprint, cache_dir, max_bytes, dtype, **options): how ``open_cache`` builds it from a config.

    Processes. The collator (and so every lookup) runs in DataLoader workers: a forked worker
    shares the object copy-on-write, a spawned one gets a pickled copy, so a backend must pickle, and
    drop process-local handles (mmaps, files, connections) in ``__getstate__`` to reopen them lazily.
    Counters need nothing: they live in a shared-memory table of the base class that pickles with
    the object, so counts made in workers reach the parent's :meth:`summary`. Under several ranks
    the trainer calls, at every epoch end, ``flush()`` on every rank, a barrier, then ``refresh()``
    (``fastfreeze.cache.wiring.FlushCache``): a row any rank stored is a hit everywhere next epoch.
    One object is not thread-safe (use one per thread).

    What fastfreeze calls: ``get_many``, ``put_many`` (and ``get``/``put``), ``key in cache``, ``flush``,
    ``refresh``, ``summary``, ``refused``, ``max_bytes``, ``writable`` (``fastfreeze.cache.wiring``,
    ``.collator``, the trainer's ``cache_summary()``). Open one by kind with
    :func:`~fastfreeze.cache.wiring.open_cache`; ``docs/extending.md`` shows adding a backend.

    Usage: ``rows = cache.get_many(keys); cache.put_many(keys, values)``
    """

    kind: str  # each backend names itself (checked at construction)
    path: str | None = None  # where the store lives; None: in this process
    writable: bool = True  # False once the backend has disabled its writes

    def __init_subclass__(cls, **kwargs):
        """A subclass that sets its own `kind` becomes selectable as FreezeConfig(cache=kind)."""
        super().__init_subclass__(**kwargs)
        kind = cls.__dict__.get("kind")
        if not isinstance(kind, str) or not kind:
            return  # an intermediate class, or one the construction check will refuse
        known = CACHE_BACKENDS.get(kind)
        if known is not None and (known.__module__, known.__qualname__) != (cls.__module__, cls.__qualname__):
            raise TypeError(f"cache kind {kind!r} is taken by {known.__module__}.{known.__qualname__}; "
                            f"give {cls.__qualname__} another `kind`")
        CACHE_BACKENDS[kind] = cls  # the same class defined again (a reloaded module) replaces itself

    def __init__(self, fingerprint: str, max_bytes: int | None = None, dtype=None):
        if not isinstance(getattr(type(self), "kind", None), str) or not type(self).kind:
            raise TypeError(f"{type(self).__name__} must set the class attribute `kind` (a short name, e.g. "
                            "'memory'): summaries and logs name the backend by it")
        if not isinstance(fingerprint, str) or not fingerprint:
            raise ValueError("cache fingerprint must be a non-empty string (see prefix_fingerprint)")
        if max_bytes is not None and (not isinstance(max_bytes, int) or max_bytes <= 0):
            raise ValueError(f"max_bytes must be a positive int or None (unbounded), got {max_bytes!r}")
        self.fingerprint = fingerprint
        self.max_bytes = max_bytes
        self.dtype = resolve_dtype(dtype)
        self.hidden: int | None = None
        # columns: hits, misses, refused
        self._counts = torch.zeros(_COUNTER_SLOTS, 3, dtype=torch.int64)
        try:
            self._counts.share_memory_()
        except (RuntimeError, OSError):  # no shm (odd sandbox): counts stay per process
            pass

    @classmethod
    def open(cls, fingerprint: str, cache_dir=None, max_bytes: int | None = None, dtype=None, **options) -> "PrefixCache":
        """How :func:`~fastfreeze.cache.wiring.open_cache` builds this backend from a config; the default
        fits a constructor ``(fingerprint, max_bytes, dtype)`` with no directory and no options.

        Usage: ``cache = MemoryCache.open(fp, max_bytes=8 << 30)``
        """
        if options:
            raise ValueError(f"options {sorted(options)} do not apply to cache kind {cls.kind!r}")
        return cls(fingerprint, max_bytes=max_bytes, dtype=dtype)

    # -- what a backend implements ---------------------------------------------------------------
    @abc.abstractmethod
    def _lookup(self, key: str) -> torch.Tensor | None:
        """The stored ``[n, H]`` row of `key` (a read-only view is fine) or None."""

    @abc.abstractmethod
    def _store(self, key: str, value: torch.Tensor) -> bool:
        """Keep a CPU, cache-dtype, contiguous row not yet present (the backend owns it); False when refused."""

    @abc.abstractmethod
    def _has(self, key: str) -> bool:
        """Whether `key` is stored."""

    @abc.abstractmethod
    def __len__(self) -> int:
        """Entries stored."""

    @property
    @abc.abstractmethod
    def nbytes(self) -> int:
        """Data bytes stored (what ``max_bytes`` bounds)."""

    # -- what fastfreeze calls -------------------------------------------------------------------
    def get(self, key: str) -> torch.Tensor | None:
        """The stored ``[n, H]`` CPU tensor (cache dtype; treat as read-only) or None; counts hit/miss."""
        row = self._lookup(key)
        self._counts[_counter_slot(), 0 if row is not None else 1] += 1
        return row

    def get_many(self, keys: Sequence[str]) -> list[torch.Tensor | None]:
        """``[get(k) for k in keys]``, counted once per call (a counter update per key would cost the
        read path ~15% of its time at 256-token rows)."""
        rows = [self._lookup(k) for k in keys]
        hits = sum(row is not None for row in rows)
        counts = self._counts[_counter_slot()]
        counts[0] += hits
        counts[1] += len(rows) - hits
        return rows

    def put(self, key: str, value: torch.Tensor) -> bool:
        """Store a CPU copy of ``value`` ([n, H]) in the cache dtype; False when refused (bound/disabled)."""
        return self.put_many([key], [value]) == 1

    def put_many(self, keys: Sequence[str], values: Sequence[torch.Tensor]) -> int:
        """Store several rows; returns how many are now present. Rows on an accelerator are
        converted to the cache dtype there and copied to host in one transfer."""
        keys, values = list(keys), list(values)
        if len(keys) != len(values):
            raise ValueError(f"put_many got {len(keys)} keys but {len(values)} values")
        present, todo = 0, []
        seen = set()
        for k, v in zip(keys, values):
            self._check_row(k, v)
            if k in seen or self._has(k):
                present += 1
            else:
                seen.add(k)
                todo.append((k, v))
        if not todo:
            return present
        dtype = self.dtype or todo[0][1].dtype
        vals = [v.detach() for _, v in todo]
        dev = vals[0].device
        if dev.type != "cpu" and all(v.device == dev for v in vals):
            flat = torch.cat([v.to(dtype) for v in vals]).to("cpu")
            vals = list(flat.split([v.shape[0] for v in vals]))
        for (k, _), v in zip(todo, vals):
            # clone: the store must own its bytes (no aliasing of the caller's or a batch buffer).
            row = v.to(device="cpu", dtype=dtype).clone(memory_format=torch.contiguous_format)
            if self._store(k, row):
                present += 1
                if self.dtype is None:
                    self.dtype = dtype
            else:
                self._counts[_counter_slot(), 2] += 1
        return present

    def _check_row(self, key, value) -> None:
        if not isinstance(key, str):
            raise TypeError(f"cache keys are str (Segments.keys, from example_key), got {type(key).__name__}")
        if not isinstance(value, torch.Tensor) or value.dim() != 2 or not value.is_floating_point():
            raise ValueError(
                "cache values are [n_tokens, hidden] floating tensors (a segment's rows of a [B, T, H] boundary, "
                f"at Segments.index), got {getattr(value, 'shape', type(value))}"
            )
        if self.hidden is None:
            self.hidden = int(value.shape[1])
        elif value.shape[1] != self.hidden:
            raise ValueError(
                f"cache row hidden size {value.shape[1]} != {self.hidden} already stored; one cache "
                "serves one prefix (different models must use different fingerprints)"
            )

    def __contains__(self, key) -> bool:
        return self._has(key)

    def flush(self) -> None:
        """Publish the rows this process stored to the processes sharing the store (default: none to publish)."""

    def refresh(self) -> None:
        """Load the rows other processes published since the last look (default: the store is per process)."""

    def close(self) -> None:
        """Flush; the object stays usable."""
        self.flush()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    @property
    def hits(self) -> int:
        return int(self._counts[:, 0].sum())

    @property
    def misses(self) -> int:
        return int(self._counts[:, 1].sum())

    @property
    def refused(self) -> int:
        return int(self._counts[:, 2].sum())

    def summary(self) -> CacheSummary:
        """Entries, bytes, hits, misses, refused (counts include DataLoader workers')."""
        return CacheSummary(
            kind=self.kind,
            entries=len(self),
            bytes=self.nbytes,
            hits=self.hits,
            misses=self.misses,
            refused=self.refused,
            fingerprint=self.fingerprint,
            path=self.path,
            writable=self.writable,
        )


class MemoryCache(PrefixCache):
    """In-process store of CPU rows, bounded by ``max_bytes`` (tensor bytes; dict overhead not counted).

    Rows are plain (pageable) CPU tensors on purpose: per-row pinned allocations are slow and pin
    RAM; the collator assembles each batch in one pinned buffer instead. A forked DataLoader worker
    sees the entries present when it was forked (copy-on-write); a spawned worker gets a pickled copy.

    Usage: ``cache = MemoryCache(fp, max_bytes=8 << 30, dtype=torch.bfloat16)``
    """

    kind = "memory"

    def __init__(self, fingerprint: str, max_bytes: int | None = None, dtype=None):
        super().__init__(fingerprint, max_bytes, dtype)
        self._rows: dict[str, torch.Tensor] = {}
        self._bytes = 0

    def _lookup(self, key):
        return self._rows.get(key)

    def _has(self, key):
        return key in self._rows

    def _store(self, key, value):
        size = value.numel() * value.element_size()
        if self.max_bytes is not None and self._bytes + size > self.max_bytes:
            return False
        self._rows[key] = value
        self._bytes += size
        return True

    def __len__(self):
        return len(self._rows)

    @property
    def nbytes(self):
        return self._bytes
