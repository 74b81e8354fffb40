"""Data path of the prefix cache: look boundary states up in the collator, off the training step.

Every segment of the batch (a padded row, or a document of a packed row, see
:mod:`fastfreeze.cache.segments`) is looked up. All cached: the batch gets the boundary. Some
cached: the batch gets the boundary with the cached segments filled and a :class:`MissingSegments`
saying which are missing, and the trainer runs the prefix for only those. None cached: the batch
goes as it came and the trainer runs the prefix for all of it.

The lookup runs where the batch is built (the main process, or DataLoader workers), so the step
only does one host-to-device copy of ``batch["prefix_boundary"]``; it is pinned in the main process
when CUDA is available so that copy can be ``non_blocking``. In a DataLoader worker nothing is
pinned here (pinning would initialise CUDA in a forked process); ``DataLoader(pin_memory=True)``
(the HF Trainer default) pins the batch on its way out instead.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from .segments import MissingSegments, Segments, segment_batch
from .store import PrefixCache

__all__ = ["BOUNDARY_KEY", "MISSING_KEY", "CachedBoundaryCollator", "assemble"]

BOUNDARY_KEY = "prefix_boundary"
MISSING_KEY = "prefix_boundary_missing"


def _contiguous_start(index: torch.Tensor) -> int | None:
    """Where ``index`` starts when it is one run ``s, s+1, ...`` (every padded or packed segment but a
    row whose mask has holes), else None. A segment's indices ascend (``Segments``' contract), so
    first and last decide it without a pass over the indices."""
    start = int(index[0])
    return start if int(index[-1]) - start == index.numel() - 1 else None


def _host_buffer(rows: int, hidden: int, dtype: torch.dtype, pin_memory: bool) -> torch.Tensor:
    """An uninitialised ``[rows, hidden]`` output. Unpinned, numpy allocates it: numpy advises the kernel to
    back large arrays with transparent huge pages and torch's CPU allocator does not (unless
    THP_MEM_ALLOC_ENABLE=1), and the copy into it ran 18% faster here (docs/cache-sizing.md)."""
    nbytes = rows * hidden * dtype.itemsize
    if pin_memory or nbytes == 0:
        return torch.empty(rows, hidden, dtype=dtype, pin_memory=pin_memory)
    return torch.from_numpy(np.empty(nbytes, dtype=np.uint8)).view(dtype).view(rows, hidden)


def _zero_gaps(out: torch.Tensor, spans: list[tuple[int, int]], holes: list[torch.Tensor]) -> None:
    """Zero what no row was written to (padding, misses), and only that: ``torch.zeros`` up front
    would write every byte twice. ``spans``: the ``[start, stop)`` runs written; ``holes``: the
    indices of rows written by ``index_copy_``."""
    if holes:  # a mask with holes: a per-token mask (rare; the usual batch never gets here)
        covered = torch.zeros(out.shape[0], dtype=torch.bool)
        for start, stop in spans:
            covered[start:stop] = True
        for index in holes:
            covered[index] = True
        gaps = torch.nonzero(~covered).flatten()
        if gaps.numel():
            out.index_fill_(0, gaps, 0)
        return
    at = 0
    for start, stop in sorted(spans):
        if start > at:
            out[at:start].zero_()
        at = max(at, stop)
    if at < out.shape[0]:
        out[at:].zero_()


def assemble(rows: Sequence[torch.Tensor | None], segments: Segments, hidden: int, dtype: torch.dtype,
             pin_memory: bool = False) -> torch.Tensor:
    """Lay cached segment rows out as a ``[B, T, H]`` boundary (zeros where a row is None or at
    padding), copying each row once, straight into the output (pinned when ``pin_memory``): the
    host-to-device copy's source. Usage: ``boundary = assemble(cache.get_many(seg.keys), seg, 512, torch.bfloat16)``"""
    b, t = segments.shape
    out = _host_buffer(b * t, hidden, dtype, pin_memory)
    spans, holes = [], []
    for i, (row, index) in enumerate(zip(rows, segments.index)):
        if row is None:
            continue
        if row.dim() != 2 or row.shape[0] != index.numel() or row.shape[1] != hidden:
            raise ValueError(
                f"cached row {i} has shape {tuple(row.shape)} but its segment has {index.numel()} tokens and "
                f"hidden={hidden}; the cache does not match this model/tokenization (new fingerprint?)")
        if index.numel() == 0:
            continue
        start = _contiguous_start(index)
        if start is not None:  # a memcpy (converting dtype on the way) from the cache's bytes into the output
            out[start : start + index.numel()].copy_(row)
            spans.append((start, start + index.numel()))
        else:  # index_copy_ needs the output's dtype: a second copy only when the cache's differs
            out.index_copy_(0, index, row.to(dtype))
            holes.append(index)
    _zero_gaps(out, spans, holes)
    return out.view(b, t, hidden)


class CachedBoundaryCollator:
    """Wraps a collator: when every segment of the batch is cached, adds ``batch["prefix_boundary"]``
    ([B, T, H], laid out like the batch, zeros at padding); when some are, adds it partly filled plus
    ``batch["prefix_boundary_missing"]`` (a :class:`MissingSegments`), and the trainer runs the prefix
    for the missing segments only; when none are, adds nothing. ``split_documents``: key each document
    of a packed row (set by the runtime once the packed-document check passed). Picklable, so it works in DataLoader workers: a DiskCache
    reopens its memory maps lazily there; a MemoryCache in a forked worker sees the entries present
    at fork time (workers are re-forked each epoch unless ``persistent_workers=True``, which would
    freeze them at the first epoch); under the ``spawn`` start method the MemoryCache is pickled
    into each worker (every row moved to shared memory), so prefer a DiskCache there. Hit/miss
    counts made in workers reach ``cache.summary()``.

    Usage: ``trainer.data_collator = CachedBoundaryCollator(collator, cache, cfg.hidden_size, torch.bfloat16)``
    """

    def __init__(
        self,
        base_collator,
        cache: PrefixCache,
        hidden_size: int,
        dtype: torch.dtype,
        pin_memory: bool | None = None,
        split_documents: bool = False,
    ):
        if not callable(base_collator):
            raise TypeError("base_collator must be callable (e.g. DataCollatorWithPadding(tokenizer))")
        if not isinstance(cache, PrefixCache):
            raise TypeError(f"cache must be a PrefixCache (see open_cache), got {type(cache).__name__}")
        if not isinstance(hidden_size, int) or hidden_size <= 0:
            raise ValueError(f"hidden_size must be a positive int, got {hidden_size!r}")
        if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
            raise ValueError(f"dtype must be a floating torch.dtype (the model's), got {dtype!r}")
        if pin_memory and not torch.cuda.is_available():
            raise ValueError("pin_memory=True needs CUDA; leave pin_memory=None to decide automatically")
        self.base_collator = base_collator
        self.cache = cache
        self.hidden_size = hidden_size
        self.dtype = dtype
        self.pin_memory = torch.cuda.is_available() if pin_memory is None else bool(pin_memory)
        self.split_documents = bool(split_documents)

    def __call__(self, features) -> dict:
        batch = self.base_collator(features)
        try:
            input_ids = batch["input_ids"]
        except (TypeError, KeyError):
            raise ValueError(
                "the base collator must return a mapping with 'input_ids' ([B, T] tensor); "
                f"got {type(batch).__name__}"
            ) from None
        seg = segment_batch(input_ids, batch.get("attention_mask"), batch.get("position_ids"),
                            split_documents=self.split_documents)
        # Look every segment up (not just up to the first miss) so hits/misses count honestly and a
        # partly cached batch computes only what is missing; a lookup is an index probe plus a lazy view.
        rows = self.cache.get_many(seg.keys)
        missing = [i for i, row in enumerate(rows) if row is None]
        if len(missing) == len(rows):
            return batch
        in_worker = torch.utils.data.get_worker_info() is not None
        batch[BOUNDARY_KEY] = assemble(rows, seg, self.hidden_size, self.dtype,
                                       pin_memory=self.pin_memory and not in_worker)
        if missing:
            batch[MISSING_KEY] = MissingSegments(seg, missing)
        return batch
