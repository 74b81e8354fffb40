"""Opens the boundary cache and wires it into training: fingerprint, store, collator, lazy fill, batched precompute.

Data flows one way: batch -> (cache hit: boundary from the collator | miss: prefix runs, rows
stored) -> boundary hidden state -> suffix -> loss.

Usage (FastFreezeTrainer does this for you when `FreezeConfig(cache=...)` is set):
    rt = PrefixCacheRuntime.open(model, prefix, config)
    collator = rt.wrap_collator(collator)
    rt.build(dataset, collator, batch_size=64)       # optional precompute pass
"""
from __future__ import annotations

import logging
import time
import warnings

import torch
from torch import nn
from tqdm.auto import tqdm

from .._hf_compat import attn_implementation, text_config
from .._version import __version__
from ..config import FreezeConfig
from ..families import UnsupportedModelError
from ..prefix import FrozenPrefix
from .collator import BOUNDARY_KEY, CachedBoundaryCollator, gather_rows
from .disk import DiskCache
from .keys import batch_keys, library_versions, prefix_fingerprint
from .store import CacheWriteError, MemoryCache, PrefixCache

logger = logging.getLogger(__name__)

_MODEL_INPUTS = ("input_ids", "attention_mask", "position_ids")


def open_cache(kind: str, fingerprint: str, cache_dir=None, max_bytes=None, dtype=None, **kwargs) -> PrefixCache:
    """Open a ``"memory"`` or ``"disk"`` cache; extra kwargs go to :class:`~fastfreeze.cache.disk.DiskCache`.

    Usage: ``cache = open_cache("disk", fp, cache_dir="/scratch/ff-cache", dtype=torch.bfloat16)``
    """
    if kind == "memory":
        if kwargs:
            raise ValueError(f"options {sorted(kwargs)} apply only to kind='disk'")
        return MemoryCache(fingerprint, max_bytes=max_bytes, dtype=dtype)
    if kind == "disk":
        if cache_dir is None:
            raise ValueError("a disk cache needs cache_dir (e.g. FreezeConfig(cache_dir='...'))")
        return DiskCache(cache_dir, fingerprint, max_bytes=max_bytes, dtype=dtype, **kwargs)
    raise ValueError(f"cache kind must be 'memory' or 'disk', got {kind!r}")



def compute_fingerprint(model: nn.Module, prefix: FrozenPrefix, config: FreezeConfig, kernel_set: str) -> str:
    """Everything the boundary depends on: frozen tensors, model config, dtype, attention kernel,
    the kernel set, k and library versions. Any change gives a different cache.

    Refuses DeepSpeed ZeRO-3 partitioned prefix weights: each rank holds an empty placeholder
    (`ds_id` marks them), so two different models would share one fingerprint."""
    partitioned = [n for n, p in zip(prefix.names, prefix.modules)
                   if any(hasattr(t, "ds_id") for t in p.parameters())]
    if partitioned:
        raise UnsupportedModelError(
            f"prefix cache refused: DeepSpeed ZeRO-3 partitions the frozen prefix ({', '.join(partitioned[:3])}"
            f"{', ...' if len(partitioned) > 3 else ''}), so its weights cannot be fingerprinted. Use ZeRO-2 "
            "(examples/deepspeed_zero2.json) or FSDP2 (fastfreeze.integrations.distributed.fsdp_config), "
            "or FreezeConfig(cache=None).")
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

    def __init__(self, prefix: FrozenPrefix, cache: PrefixCache, hidden_size: int, dtype: torch.dtype):
        self.prefix, self.cache, self.hidden_size, self.dtype = prefix, cache, hidden_size, dtype
        self.stored = 0

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
        return cls(prefix, cache, int(text_config(model.config).hidden_size), dtype)

    def wrap_collator(self, collator) -> CachedBoundaryCollator:
        if isinstance(collator, CachedBoundaryCollator):
            return collator
        return CachedBoundaryCollator(collator, self.cache, self.hidden_size, self.dtype)

    def store_batch(self, inputs: dict, boundary: torch.Tensor) -> int:
        """Split a freshly computed [B, T, H] boundary into per-example rows and store them."""
        if inputs.get("input_ids") is None:
            return 0
        mask = inputs.get("attention_mask")
        if mask is not None and mask.dim() != 2:
            return 0  # 4-D / packed masks have no per-row key; just don't cache those batches
        keys = batch_keys(inputs["input_ids"], mask, inputs.get("position_ids"))
        new = [(k, r) for k, r in zip(keys, gather_rows(boundary.detach(), mask)) if k not in self.cache]
        if not new:
            return 0
        n = self.cache.put_many([k for k, _ in new], [r for _, r in new])
        self.stored += n
        return n

    def build(self, dataset, collator, batch_size: int, device: torch.device, desc: str = "prefix cache") -> dict:
        """Precompute the boundary of every uncached example: no grad, large batches, examples
        bucketed by length so little is padded. Returns {'examples', 'tokens', 'seconds', 'tokens_per_s'}."""
        base = collator.base_collator if isinstance(collator, CachedBoundaryCollator) else collator
        lengths = [len(ex["input_ids"]) for ex in dataset]
        order = sorted(range(len(lengths)), key=lengths.__getitem__)
        batches = [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
        model = self.prefix.model
        was_training = model.training
        model.eval()
        self.prefix.restore()
        start, tokens, computed = time.perf_counter(), 0, 0
        bar = tqdm(total=sum(lengths), unit="tok", unit_scale=True, desc=desc, leave=False)
        try:
            for idx in batches:
                batch = base([dataset[i] for i in idx])
                keys = batch_keys(batch["input_ids"], batch.get("attention_mask"), batch.get("position_ids"))
                n_tok = sum(lengths[i] for i in idx)
                if all(k in self.cache for k in keys):
                    bar.update(n_tok)
                    continue
                inputs = {k: batch[k].to(device) for k in _MODEL_INPUTS if batch.get(k) is not None}
                boundary = self.prefix.compute_boundary(**inputs)
                self.store_batch({k: v.cpu() for k, v in inputs.items()}, boundary)
                tokens += n_tok
                computed += len(idx)
                bar.update(n_tok)
        finally:
            bar.close()
            model.train(was_training)
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
            keys = batch_keys(batch["input_ids"], batch.get("attention_mask"), batch.get("position_ids"))
            if keys[0] not in self.cache:
                return False
        return True


__all__ = ["BOUNDARY_KEY", "PrefixCacheRuntime", "compute_fingerprint", "open_cache"]
