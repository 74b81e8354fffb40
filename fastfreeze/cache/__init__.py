"""The boundary cache: the prefix's output per example, keyed by content, stored in memory or on disk, served by the collator.

Data flows one way: batch -> (cache hit: `collator` adds the boundary | miss: the prefix runs and
`runtime` stores its rows) -> boundary hidden state -> suffix -> loss. Modules: `keys` (example keys,
prefix fingerprint), `segments` (a batch as keyed segments), `store` (`PrefixCache`, the backend
contract, and the memory backend), `disk` (memory-mapped shards), `collator` (lookups in the data path,
`assemble`), `runtime` (open the configured backend, fill and precompute).

Usage::

    from fastfreeze.cache import open_cache, prefix_fingerprint
    cache = open_cache("disk", fp, cache_dir="~/.cache/fastfreeze", max_bytes=50 << 30)
"""
from .collator import BOUNDARY_KEY, CachedBoundaryCollator, assemble
from .disk import CacheCorruptError, DiskCache
from .keys import example_key, library_versions, prefix_fingerprint
from .wiring import BACKENDS, PrefixCacheRuntime, compute_fingerprint, open_cache
from .segments import segment_batch
from .store import CacheSummary, CacheWarning, CacheWriteError, MemoryCache, PrefixCache

__all__ = [
    "BACKENDS", "BOUNDARY_KEY", "CacheCorruptError", "CacheSummary", "CacheWarning", "CacheWriteError",
    "CachedBoundaryCollator", "DiskCache", "MemoryCache", "PrefixCache", "PrefixCacheRuntime", "assemble",
    "compute_fingerprint", "example_key", "library_versions", "open_cache", "prefix_fingerprint", "segment_batch",
]
