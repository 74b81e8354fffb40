"""The boundary cache: the prefix's output per example, keyed by content, stored in memory or on disk, served by the collator.

Data flows one way: batch -> (cache hit: `collator` adds the boundary | miss: the prefix runs and
`runtime` stores its rows) -> boundary hidden state -> suffix -> loss. Modules: `keys` (example keys,
prefix fingerprint), `store` (interface, memory store), `disk` (memory-mapped shards), `collator`
(lookups in the data path), `runtime` (open the configured store, fill and precompute).

Usage::

    from fastfreeze.cache import open_cache, batch_keys, prefix_fingerprint
    cache = open_cache("disk", fp, cache_dir="~/.cache/fastfreeze", max_bytes=50 << 30)
"""
from .collator import BOUNDARY_KEY, CachedBoundaryCollator, gather_rows, scatter_rows
from .disk import CacheCorruptError, DiskCache
from .keys import batch_keys, example_key, library_versions, prefix_fingerprint
from .runtime import PrefixCacheRuntime, compute_fingerprint, open_cache
from .store import CacheSummary, CacheWarning, CacheWriteError, MemoryCache, PrefixCache

__all__ = [
    "BOUNDARY_KEY", "CacheCorruptError", "CacheSummary", "CacheWarning", "CacheWriteError", "CachedBoundaryCollator",
    "DiskCache", "MemoryCache", "PrefixCache", "PrefixCacheRuntime", "batch_keys", "compute_fingerprint",
    "example_key", "gather_rows", "library_versions", "open_cache", "prefix_fingerprint", "scatter_rows",
]
