"""Content-addressed cache of frozen-prefix boundary hidden states: keys, fingerprint, memory store.

The boundary hidden state of an example is the input of the first trainable decoder layer for the
example's real (non-pad) tokens, an ``[n_tokens, hidden]`` tensor. It depends only on the token ids,
the position ids and the frozen prefix, so it is keyed by the content of the first two
(:func:`example_key`) inside a store scoped by a hash of the third (:func:`prefix_fingerprint`).

Usage::

    fp = prefix_fingerprint(frozen_named_tensors, config=model.config.to_dict(), dtype="bfloat16")
    cache = open_cache("disk", fp, cache_dir="~/.cache/fastfreeze", max_bytes=50 << 30)
    keys = batch_keys(batch["input_ids"], batch["attention_mask"])
    rows = cache.get_many(keys)            # [n_b, H] CPU tensors or None
    cache.put_many(keys, gather_rows(boundary, batch["attention_mask"]))
    cache.flush(); print(cache.summary())

The disk store lives in :mod:`fastfreeze.cache_disk`; the data path in :mod:`fastfreeze.cache_collator`.
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import json
import os
import struct
from dataclasses import dataclass
from typing import Iterable, Sequence

import torch

__all__ = [
    "CacheSummary",
    "CacheWarning",
    "CacheWriteError",
    "DiskCache",
    "MemoryCache",
    "PrefixCache",
    "batch_keys",
    "example_key",
    "library_versions",
    "open_cache",
    "prefix_fingerprint",
]

_KEY_VERSION = b"fastfreeze-key-v1"
_FP_VERSION = b"fastfreeze-prefix-fp-v1"
_HASH_CHUNK_BYTES = 64 << 20  # device->host copy granularity when fingerprinting
# Hit/miss/refused counters live in a small shared-memory table with one row per DataLoader worker
# (row 0 = the main process), so counts made in forked or spawned workers reach the main process's
# summary() without cross-process races: each row has exactly one writer.
_COUNTER_SLOTS = 129


class CacheWriteError(OSError):
    """The cache directory cannot be written (raised at open time; later write failures only warn)."""


class CacheWarning(UserWarning):
    """A cache problem that was handled (corrupt shard quarantined, writes disabled)."""


# --------------------------------------------------------------------------------------------
# keys and fingerprint
# --------------------------------------------------------------------------------------------


def _as_int64_bytes(t: torch.Tensor) -> bytes:
    return t.detach().to(device="cpu", dtype=torch.int64).contiguous().numpy().tobytes()


def example_key(input_ids: torch.Tensor, position_ids: torch.Tensor) -> str:
    """Content hash (blake2b-128, hex) of one example's real token ids and their position ids.

    Usage: ``key = example_key(torch.tensor([5, 9, 2]), torch.arange(3))``
    """
    if not isinstance(input_ids, torch.Tensor) or not isinstance(position_ids, torch.Tensor):
        raise TypeError("example_key expects two 1-D integer tensors (input_ids, position_ids)")
    if input_ids.dim() != 1 or position_ids.dim() != 1 or input_ids.numel() != position_ids.numel():
        raise ValueError(
            f"example_key expects 1-D input_ids and position_ids of equal length, got shapes "
            f"{tuple(input_ids.shape)} and {tuple(position_ids.shape)}; pass one example's real tokens"
        )
    if input_ids.is_floating_point() or position_ids.is_floating_point():
        raise TypeError("example_key expects integer tensors; got a floating-point tensor")
    h = hashlib.blake2b(_KEY_VERSION, digest_size=16)
    # The length prefix makes the (ids, positions) split unambiguous.
    h.update(struct.pack("<q", input_ids.numel()))
    h.update(_as_int64_bytes(input_ids))
    h.update(_as_int64_bytes(position_ids))
    return h.hexdigest()


def batch_keys(
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor | None = None,
    position_ids: torch.Tensor | None = None,
) -> list[str]:
    """Keys of every row of a ``[B, T]`` batch; real tokens are ``attention_mask == 1``.

    Positions are ``position_ids[b]`` when given, else ``arange(T)`` -- what HF decoder models use
    when ``position_ids`` is None, so left padding shifts positions and (correctly) changes the key.

    Usage: ``keys = batch_keys(batch["input_ids"], batch.get("attention_mask"))``
    """
    if not isinstance(input_ids, torch.Tensor) or input_ids.dim() != 2:
        raise ValueError(
            f"batch_keys expects input_ids of shape [B, T], got "
            f"{tuple(input_ids.shape) if isinstance(input_ids, torch.Tensor) else type(input_ids)}"
        )
    b, t = input_ids.shape
    ids = input_ids.detach().to(device="cpu", dtype=torch.int64)
    if position_ids is None:
        pos = torch.arange(t, dtype=torch.int64).expand(b, t)
    else:
        if position_ids.dim() == 1:
            position_ids = position_ids.unsqueeze(0)
        if position_ids.shape[-1] != t or position_ids.shape[0] not in (1, b):
            raise ValueError(
                f"position_ids shape {tuple(position_ids.shape)} does not match input_ids {(b, t)}"
            )
        pos = position_ids.detach().to(device="cpu", dtype=torch.int64).expand(b, t)
    if attention_mask is None:
        return [example_key(ids[i], pos[i]) for i in range(b)]
    if attention_mask.shape != input_ids.shape:
        raise ValueError(
            f"attention_mask shape {tuple(attention_mask.shape)} does not match input_ids {(b, t)}; "
            "a 4-D or packed mask is not supported here: pass a [B, T] 0/1 mask and position_ids"
        )
    mask = attention_mask.detach().cpu() != 0
    return [example_key(ids[i][mask[i]], pos[i][mask[i]]) for i in range(b)]


def _json_default(obj):
    if isinstance(obj, (set, frozenset)):
        return sorted(obj, key=repr)
    if isinstance(obj, torch.dtype):
        return str(obj)
    if hasattr(obj, "to_dict"):
        return obj.to_dict()
    return repr(obj)


def _hash_tensor(name: str, t: torch.Tensor) -> bytes:
    if t.device.type == "meta":
        raise ValueError(
            f"prefix_fingerprint: tensor {name!r} is on the meta device (weights not loaded); "
            "fingerprint the model after its weights are materialized"
        )
    h = hashlib.sha256()
    h.update(json.dumps([name, str(t.dtype), list(t.shape)]).encode())
    flat = t.detach().reshape(-1)
    step = max(1, _HASH_CHUNK_BYTES // max(1, flat.element_size()))
    for start in range(0, flat.numel(), step):
        chunk = flat[start : start + step].to("cpu").contiguous()
        # Raw bytes of any dtype (bf16 included): hash the uint8 view, numpy has no bf16.
        h.update(chunk.view(torch.uint8).numpy())
    return h.digest()


def prefix_fingerprint(named_tensors: Iterable[tuple[str, torch.Tensor]], **facts) -> str:
    """Hex hash of every frozen tensor (name, dtype, shape, bytes) plus ``facts`` (sorted JSON).

    Put everything the boundary state depends on in ``facts``: model config dict, compute dtype,
    attn_implementation, kernel set, ``library_versions()``, num_frozen_layers. Deterministic across
    processes; the tensor order does not matter (sorted by name). Cost: one sha256 pass over the
    bytes on CPU, tensors hashed in parallel threads (GPU tensors copied to host in 64 MiB chunks):
    measured 0.8 GiB/s on 2 busy CPU cores, i.e. ~2.5 s for a 1B-parameter bf16 prefix; compute it
    once per run, not per step.

    Usage: ``fp = prefix_fingerprint(frozen.named_parameters(), config=cfg.to_dict(), dtype="bf16")``
    """
    items = sorted(((str(n), t) for n, t in named_tensors), key=lambda nt: nt[0])
    for name, t in items:
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"prefix_fingerprint: {name!r} is a {type(t).__name__}, not a tensor")
    workers = min(8, os.cpu_count() or 1, max(1, len(items)))
    # hashlib releases the GIL on large buffers, so threads give real parallelism.
    with concurrent.futures.ThreadPoolExecutor(max_workers=workers) as pool:
        digests = list(pool.map(lambda nt: _hash_tensor(*nt), items))
    h = hashlib.sha256(_FP_VERSION)
    h.update(struct.pack("<q", len(items)))
    for d in digests:
        h.update(d)
    h.update(json.dumps(facts, sort_keys=True, default=_json_default).encode())
    return h.hexdigest()[:32]


def library_versions() -> dict[str, str]:
    """Versions of the libraries that can change numerics (a ready-made fingerprint fact)."""
    out = {"torch": torch.__version__, "cuda": str(torch.version.cuda)}
    for mod in ("transformers", "triton", "flash_attn"):
        try:
            out[mod] = __import__(mod).__version__
        except Exception:  # not installed or broken: record absence, it is a fact too
            out[mod] = "none"
    return out


# --------------------------------------------------------------------------------------------
# stores
# --------------------------------------------------------------------------------------------


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


def _resolve_dtype(dtype) -> torch.dtype | None:
    if dtype is None or isinstance(dtype, torch.dtype):
        return dtype
    d = getattr(torch, str(dtype).replace("torch.", ""), None)
    if not isinstance(d, torch.dtype) or not d.is_floating_point:
        raise ValueError(f"cache dtype {dtype!r} is not a torch floating dtype (e.g. 'bfloat16')")
    return d


def _counter_slot() -> int:
    info = torch.utils.data.get_worker_info()
    return 0 if info is None else 1 + info.id % (_COUNTER_SLOTS - 1)


class PrefixCache:
    """Base store: ``key -> [n, H]`` CPU tensor. Use :class:`MemoryCache`, :class:`DiskCache`, :func:`open_cache`.

    Rows returned by :meth:`get` may be the stored tensor itself: treat them as read-only. One object
    is not thread-safe (use one per thread); processes are fine (workers, DDP ranks).

    Usage: ``rows = cache.get_many(keys); cache.put_many(keys, values)``
    """

    kind = "base"

    def __init__(self, fingerprint: str, max_bytes: int | None = None, dtype=None):
        if not isinstance(fingerprint, str) or not fingerprint:
            raise ValueError("cache fingerprint must be a non-empty string (see prefix_fingerprint)")
        if max_bytes is not None and (not isinstance(max_bytes, int) or max_bytes <= 0):
            raise ValueError(f"max_bytes must be a positive int or None (unbounded), got {max_bytes!r}")
        self.fingerprint = fingerprint
        self.max_bytes = max_bytes
        self.dtype = _resolve_dtype(dtype)
        self.hidden: int | None = None
        # columns: hits, misses, refused
        self._counts = torch.zeros(_COUNTER_SLOTS, 3, dtype=torch.int64)
        try:
            self._counts.share_memory_()
        except (RuntimeError, OSError):  # no shm (odd sandbox): counts stay per process
            pass

    # -- subclass interface -------------------------------------------------------------------
    def _lookup(self, key: str) -> torch.Tensor | None:
        raise NotImplementedError

    def _store(self, key: str, value: torch.Tensor) -> bool:
        """Store a CPU, cache-dtype, contiguous row not yet present; False when refused."""
        raise NotImplementedError

    def _has(self, key: str) -> bool:
        raise NotImplementedError

    def __len__(self) -> int:
        raise NotImplementedError

    @property
    def nbytes(self) -> int:
        raise NotImplementedError

    # -- public API ----------------------------------------------------------------------------
    def get(self, key: str) -> torch.Tensor | None:
        """The stored ``[n, H]`` CPU tensor (cache dtype; treat as read-only) or None; counts hit/miss."""
        row = self._lookup(key)
        self._counts[_counter_slot(), 0 if row is not None else 1] += 1
        return row

    def get_many(self, keys: Sequence[str]) -> list[torch.Tensor | None]:
        """``[get(k) for k in keys]``."""
        return [self.get(k) for k in keys]

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
            raise TypeError(f"cache keys are str (from example_key/batch_keys), got {type(key).__name__}")
        if not isinstance(value, torch.Tensor) or value.dim() != 2 or not value.is_floating_point():
            raise ValueError(
                "cache values are [n_tokens, hidden] floating tensors (use gather_rows to split a "
                f"[B, T, H] boundary), got {getattr(value, 'shape', type(value))}"
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
        """Persist pending entries (no-op for memory)."""

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

    def reset_counters(self) -> None:
        self._counts.zero_()

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
            path=getattr(self, "path", None),
            writable=getattr(self, "writable", True),
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


def open_cache(kind: str, fingerprint: str, cache_dir=None, max_bytes=None, dtype=None, **kwargs) -> PrefixCache:
    """Open a ``"memory"`` or ``"disk"`` cache; extra kwargs go to :class:`DiskCache`.

    Usage: ``cache = open_cache("disk", fp, cache_dir="/scratch/ff-cache", dtype=torch.bfloat16)``
    """
    if kind == "memory":
        if kwargs:
            raise ValueError(f"options {sorted(kwargs)} apply only to kind='disk'")
        return MemoryCache(fingerprint, max_bytes=max_bytes, dtype=dtype)
    if kind == "disk":
        if cache_dir is None:
            raise ValueError("a disk cache needs cache_dir (e.g. FreezeConfig(cache_dir='...'))")
        from fastfreeze.cache_disk import DiskCache

        return DiskCache(cache_dir, fingerprint, max_bytes=max_bytes, dtype=dtype, **kwargs)
    raise ValueError(f"cache kind must be 'memory' or 'disk', got {kind!r}")


def __getattr__(name):
    # DiskCache lives in cache_disk (keeps each file small); lazy to avoid an import cycle.
    if name == "DiskCache":
        from fastfreeze.cache_disk import DiskCache

        return DiskCache
    raise AttributeError(name)

