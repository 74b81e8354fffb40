"""Opens the boundary cache and wires it into training: fingerprint, store, collator, lazy fill, batched precompute.

Data flows one way: batch -> (cache hit: boundary from the collator | miss: prefix runs, rows
stored) -> boundary hidden state -> suffix -> loss.

Usage (FastFreezeTrainer does this for you when `FreezeConfig(cache=...)` is set):
    rt = PrefixCacheRuntime.open(model, prefix, config)
    collator = rt.wrap_collator(collator)
    rt.build(dataset, collator, batch_size=64, device=torch.device("cuda"))  # optional precompute pass
"""
from __future__ import annotations

import logging
import time
import warnings

import torch
from torch import nn
from tqdm.auto import tqdm
from transformers import TrainerCallback

from .._hf_compat import attn_implementation, text_config
from .._version import __version__
from ..config import CACHE_BACKENDS, FreezeConfig
from ..prefix import FrozenPrefix
from ..trace import eval_mode
from .collator import BOUNDARY_KEY, CachedBoundaryCollator
from .disk import DiskCache
from .keys import library_versions, prefix_fingerprint
from .packing import packed_documents_refusal
from .segments import MissingSegments, Segments, missing_inputs, segment_batch
from .store import CacheWarning, CacheWriteError, MemoryCache, PrefixCache

logger = logging.getLogger(__name__)

_MODEL_INPUTS = ("input_ids", "attention_mask", "position_ids")


# The backends FreezeConfig(cache=<kind>) can name, by their `kind`: every PrefixCache subclass that sets
# its own `kind` (MemoryCache, DiskCache, or a third one) enters itself when defined (docs/extending.md).
BACKENDS: dict[str, type[PrefixCache]] = CACHE_BACKENDS


def open_cache(kind: str, fingerprint: str, cache_dir=None, max_bytes=None, dtype=None, **kwargs) -> PrefixCache:
    """Open the backend of `kind` (``"memory"``, ``"disk"``: :data:`BACKENDS`) through its ``open``;
    extra kwargs are the backend's options (e.g. :class:`~fastfreeze.cache.disk.DiskCache`'s).

    Usage: ``cache = open_cache("disk", fp, cache_dir="/scratch/ff-cache", dtype=torch.bfloat16)``
    """
    backend = BACKENDS.get(kind)
    if backend is None:
        known = " or ".join(repr(k) for k in BACKENDS)
        raise ValueError(f"cache kind must be {known}, got {kind!r}")
    return backend.open(fingerprint, cache_dir=cache_dir, max_bytes=max_bytes, dtype=dtype, **kwargs)


def compute_fingerprint(model: nn.Module, prefix: FrozenPrefix, config: FreezeConfig, kernel_set: str) -> str:
    """Everything the boundary depends on: frozen tensors, model config, dtype, attention kernel,
    the kernel set, k and library versions. Any change gives a different cache.

    DeepSpeed ZeRO-3 partitions are hashed as the full tensor, gathered one at a time (every rank
    calls this), so every rank and an unpartitioned copy of the model agree."""
    cfg = model.config.to_dict()
    for volatile in ("_name_or_path", "transformers_version", "architectures", "torch_dtype", "dtype"):
        cfg.pop(volatile, None)
    return prefix_fingerprint(
        prefix.named_tensors(),
        model_config=cfg,
        dtype=str(next(prefix.parameters()).dtype),
        attn_implementation=attn_implementation(model.config),
        kernels=kernel_set,
        num_frozen_layers=config.num_frozen_layers,
        fastfreeze=__version__,
        versions=library_versions(),
    )


class PrefixCacheRuntime:
    """One model's cache: where boundaries are stored, read and (lazily or in bulk) computed."""

    def __init__(self, prefix: FrozenPrefix, cache: PrefixCache, hidden_size: int, dtype: torch.dtype,
                 packed_refusal: str | None = "not checked"):
        self.prefix, self.cache, self.hidden_size, self.dtype = prefix, cache, hidden_size, dtype
        self.stored = 0
        # None: documents of a packed row are keyed one by one (the packed-document check passed).
        self.packed_refusal = packed_refusal
        self._cap_warned = False

    @property
    def split_documents(self) -> bool:
        return self.packed_refusal is None

    def segments(self, batch: dict) -> Segments:
        """The cache segments of a batch (per document of a packed row when the check passed)."""
        return segment_batch(batch["input_ids"], batch.get("attention_mask"), batch.get("position_ids"),
                             split_documents=self.split_documents)

    @classmethod
    def open(cls, model: nn.Module, prefix: FrozenPrefix, config: FreezeConfig,
             kernel_set: str = "torch") -> "PrefixCacheRuntime | None":
        """Open the configured cache; if the store cannot be written (unwritable dir, disk full),
        warn and return None: training goes on without a cache."""
        dtype = next(prefix.parameters()).dtype
        fingerprint = compute_fingerprint(model, prefix, config, kernel_set)
        try:
            cache = open_cache(config.cache, fingerprint, cache_dir=config.cache_dir,
                               max_bytes=config.cache_max_bytes, dtype=dtype)
        except CacheWriteError as err:
            warnings.warn(f"fastfreeze: prefix cache disabled, training goes on without it: {err}", stacklevel=2)
            return None
        refusal = packed_documents_refusal(prefix)
        if refusal is not None:
            logger.info("fastfreeze: per-document cache entries for packed rows refused: %s", refusal)
        return cls(prefix, cache, int(text_config(model.config).hidden_size), dtype, packed_refusal=refusal)

    def wrap_collator(self, collator) -> CachedBoundaryCollator:
        """`collator` looking every batch up in this cache (one already wrapped is reused, keyed like this runtime)."""
        if not isinstance(collator, CachedBoundaryCollator):
            collator = CachedBoundaryCollator(collator, self.cache, self.hidden_size, self.dtype)
        collator.split_documents = self.split_documents
        return collator

    def store_batch(self, inputs: dict, boundary: torch.Tensor, segments: Segments | None = None) -> int:
        """Split a freshly computed [B, T, H] boundary into per-segment rows and store the new ones."""
        if inputs.get("input_ids") is None:
            return 0
        mask = inputs.get("attention_mask")
        if mask is not None and mask.dim() != 2:
            return 0  # 4-D masks have no per-row key; just don't cache those batches
        seg = segments if segments is not None else self.segments(inputs)
        new = [i for i, k in enumerate(seg.keys) if k not in self.cache]
        if not new:
            return 0
        flat = boundary.detach().reshape(-1, boundary.shape[-1])
        rows = [flat.index_select(0, seg.index[i].to(flat.device)) for i in new]
        return self._put([seg.keys[i] for i in new], rows)

    def _put(self, keys: list, rows: list) -> int:
        before = self.cache.refused
        n = self.cache.put_many(keys, rows)
        self.stored += n
        capped = self.cache.max_bytes is not None and self.cache.writable
        if capped and self.cache.refused > before and not self._cap_warned:
            self._cap_warned = True
            warnings.warn(
                f"fastfreeze: the prefix cache reached cache_max_bytes={self.cache.max_bytes:,} "
                f"({self.cache.summary()}); it stops adding entries (nothing is evicted): what is cached stays "
                "served, the rest is computed by the prefix every time. Raise cache_max_bytes to cache more "
                "(`fastfreeze estimate` gives the size the dataset needs).", CacheWarning, stacklevel=3)
        return n

    def fill_missing(self, inputs: dict, boundary: torch.Tensor, missing: MissingSegments) -> torch.Tensor | None:
        """Run the prefix on only the missing segments of a partly cached batch, store their rows and
        write them into `boundary` ([B, T, H], on the batch's device). None when the missing
        documents cannot be batched on their own (the caller then runs the whole batch)."""
        made = missing_inputs(inputs, missing)
        if made is None:
            return None
        sub, where = made
        computed = self.prefix.compute_boundary(**sub)
        flat_sub = computed.reshape(-1, computed.shape[-1])
        rows = [flat_sub.index_select(0, w.to(flat_sub.device)) for w in where]
        seg = missing.segments
        flat = boundary.view(-1, boundary.shape[-1])
        for i, row in zip(missing.which, rows):
            flat.index_copy_(0, seg.index[i].to(flat.device), row.to(flat.dtype))
        self._put([seg.keys[i] for i in missing.which], rows)
        return boundary

    def build(self, dataset, collator, batch_size: int, device: torch.device, desc: str = "prefix cache") -> dict:
        """Precompute the boundary of every uncached example: no grad, large batches, examples
        bucketed by length so little is padded. Returns {'examples', 'tokens', 'seconds', 'tokens_per_s'}."""
        base = collator.base_collator if isinstance(collator, CachedBoundaryCollator) else collator
        lengths = [len(ex["input_ids"]) for ex in dataset]
        order = sorted(range(len(lengths)), key=lengths.__getitem__)
        batches = [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
        with eval_mode(self.prefix.model):
            self.prefix.restore()
            start, tokens, computed = time.perf_counter(), 0, 0
            bar = tqdm(total=sum(lengths), unit="tok", unit_scale=True, desc=desc, leave=False)
            try:
                for idx in batches:
                    batch = base([dataset[i] for i in idx])
                    seg = self.segments(batch)
                    n_tok = sum(lengths[i] for i in idx)
                    if all(k in self.cache for k in seg.keys):
                        bar.update(n_tok)
                        continue
                    inputs = {k: batch[k].to(device) for k in _MODEL_INPUTS if batch.get(k) is not None}
                    boundary = self.prefix.compute_boundary(**inputs)
                    self.store_batch({k: v.cpu() for k, v in inputs.items()}, boundary, seg)
                    tokens += n_tok
                    computed += len(idx)
                    bar.update(n_tok)
            finally:
                bar.close()
                self.cache.flush()
        seconds = time.perf_counter() - start
        stats = {"examples": computed, "tokens": tokens, "seconds": seconds,
                 "tokens_per_s": tokens / seconds if seconds > 0 else float("nan")}
        logger.info("fastfreeze: built prefix cache for %d examples (%d tokens, %.0f tok/s); %s",
                    computed, tokens, stats["tokens_per_s"], self.cache.summary())
        return stats

    def all_cached(self, dataset, collator) -> bool:
        """True when every example of `dataset` has a cached boundary."""
        base = collator.base_collator if isinstance(collator, CachedBoundaryCollator) else collator
        for i in range(len(dataset)):
            batch = base([dataset[i]])
            if not all(k in self.cache for k in self.segments(batch).keys):
                return False
        return True


class FlushCache(TrainerCallback):
    """Persist lazily filled cache rows at epoch ends, so DataLoader workers of the next epoch and
    later processes see them; log the cache's size once, at the end of the first epoch (what a
    full pass over the training data costs on disk or in memory: compare it with cache_max_bytes)."""

    def __init__(self, runtime: PrefixCacheRuntime):
        self.runtime = runtime
        self.logged_size = False

    def on_epoch_end(self, args, state, control, **kwargs):
        # Every rank flushes, then waits for the others, then re-reads the shared index: a row any
        # rank stored in this epoch is a hit for every rank from the next epoch on, not by timing.
        self.runtime.cache.flush()
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.barrier()
        self.runtime.cache.refresh()
        if not self.logged_size:
            self.logged_size = True
            if state.is_world_process_zero:
                summary = self.runtime.cache.summary()
                where = {"disk": "on disk", "memory": "in memory"}.get(summary.kind, f"in the {summary.kind} store")
                cap = self.runtime.cache.max_bytes
                logger.info("fastfreeze: after the first epoch the prefix cache holds %s bytes %s (cap %s): %s",
                            f"{summary.bytes:,}", where, "none" if cap is None else f"{cap:,}", summary)

    def on_train_end(self, args, state, control, **kwargs):
        self.runtime.cache.flush()

    def on_evaluate(self, args, state, control, **kwargs):
        self.runtime.cache.flush()


__all__ = ["BACKENDS", "BOUNDARY_KEY", "FlushCache", "PrefixCacheRuntime", "compute_fingerprint", "open_cache"]
