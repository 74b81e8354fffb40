"""A batch as cache segments: one per padded row, or one per document of a packed (padding-free) row.

A *segment* is a run of tokens whose boundary hidden state depends only on its own token ids and
position ids: a padded row's real tokens (``attention_mask`` given), or, in a packed row (no
``attention_mask``, ``position_ids`` restarting at each document, as TRL's padding-free and packing
collators make), one document. Each segment is keyed by :func:`~fastfreeze.cache.keys.example_key`
of its own ids and positions, so a document is stored once and served whatever it was packed with,
in any batch size and order. Splitting packed rows is exact only when the model's attention does
not cross documents; :mod:`fastfreeze.cache.packing` checks that at install time, and without that
check a packed row stays one segment.

A batch whose segments are partly cached computes only the missing ones: :func:`missing_inputs`
builds the model inputs of just those segments (the rows, or one packed row of the documents).

Usage::

    seg = segment_batch(batch["input_ids"], batch.get("attention_mask"), batch.get("position_ids"))
    rows = cache.get_many(seg.keys)
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from .keys import cpu_ids_and_positions, example_key

__all__ = ["MissingSegments", "Segments", "missing_inputs", "segment_batch"]

# Extra inputs of a packed batch that describe its documents (TRL's collator adds them for varlen
# attention kernels); rebuilt for a sub-batch of missing documents, dropped when absent.
_PACKED_EXTRAS = ("cu_seq_lens_q", "cu_seq_lens_k", "max_length_q", "max_length_k", "seq_idx")


@dataclass
class Segments:
    """The segments of a ``[B, T]`` batch: ``keys[i]``, the flat token indices ``index[i]`` into
    ``B * T`` (in order), and the batch ``row[i]`` each lies in; ``packed``: documents were split."""

    keys: list[str]
    index: list[torch.Tensor]
    row: list[int]
    shape: tuple[int, int]
    packed: bool

    def __len__(self) -> int:
        return len(self.keys)


@dataclass
class MissingSegments:
    """The segments of a batch the cache did not have (which ones, by position in ``Segments``),
    handed from the collator to the trainer with a partly filled boundary. Picklable (DataLoader
    workers); kept out of the device copy of the batch."""

    segments: Segments
    which: list[int]

    @property
    def tokens(self) -> int:
        return int(sum(self.segments.index[i].numel() for i in self.which))


def _document_starts(pos: torch.Tensor) -> list[int]:
    """Where a packed row's documents start: position 0 of the row, and every token whose position
    is not its predecessor's + 1 (what transformers reads as a new packed sequence)."""
    if pos.numel() == 0:
        return []
    brk = torch.nonzero(pos[1:] != pos[:-1] + 1).flatten() + 1
    return [0, *brk.tolist()]


def segment_batch(
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor | None = None,
    position_ids: torch.Tensor | None = None,
    split_documents: bool = False,
) -> Segments:
    """The cache segments of a ``[B, T]`` batch. With ``attention_mask`` each row's real tokens
    (``attention_mask != 0``) are one segment; without it and with ``split_documents=True`` a row with
    ``position_ids`` is split at its document starts; otherwise each row is one segment. Positions are
    ``position_ids`` when given, else ``arange(T)`` (what HF decoders use when ``position_ids`` is None,
    so left padding shifts them and, rightly, changes the key).

    Usage: ``seg = segment_batch(ids, None, pos, split_documents=True)``
    """
    ids, pos = cpu_ids_and_positions(input_ids, position_ids, "segment_batch")
    b, t = ids.shape
    keys, index, rows = [], [], []
    if attention_mask is not None:
        if attention_mask.shape != input_ids.shape:
            raise ValueError(
                f"attention_mask shape {tuple(attention_mask.shape)} does not match input_ids {(b, t)}; "
                "a 4-D or packed mask is not supported here: pass a [B, T] 0/1 mask and position_ids")
        mask = attention_mask.detach().cpu() != 0
        for i in range(b):
            local = torch.nonzero(mask[i]).flatten()
            keys.append(example_key(ids[i][local], pos[i][local]))
            index.append(local + i * t)
            rows.append(i)
        return Segments(keys, index, rows, (b, t), packed=False)
    split = split_documents and position_ids is not None
    for i in range(b):
        starts = _document_starts(pos[i]) if split else [0]
        for s, e in zip(starts, [*starts[1:], t]):
            keys.append(example_key(ids[i, s:e], pos[i, s:e]))
            index.append(torch.arange(s, e) + i * t)
            rows.append(i)
    return Segments(keys, index, rows, (b, t), packed=split)


def missing_inputs(inputs: dict, missing: MissingSegments) -> tuple[dict, list[torch.Tensor]] | None:
    """Model inputs for only the missing segments, and where each missing segment's tokens lie in
    that sub-batch (flat indices, in ``missing.which`` order); None when the missing documents
    cannot share one packed row (one's positions would continue the previous one's, merging them).

    Padded batches keep the missing segments' rows (same width, mask and positions). Packed batches
    put the missing documents in one packed row (their own positions, so the attention still keeps
    them apart), and rebuild TRL's varlen extras (``cu_seq_lens_*``, ``max_length_*``, ``seq_idx``)
    for it when the batch has them."""
    seg = missing.segments
    b, t = seg.shape
    ids = inputs["input_ids"]
    if not seg.packed:
        rows = sorted({seg.row[i] for i in missing.which})
        at = {r: j for j, r in enumerate(rows)}
        sel = torch.tensor(rows, device=ids.device)
        sub = {"input_ids": ids.index_select(0, sel)}
        for name in ("attention_mask", "position_ids"):
            v = inputs.get(name)
            if v is not None:
                sub[name] = v.index_select(0, sel) if v.shape[0] == b else v
        where = [seg.index[i] - seg.row[i] * t + at[seg.row[i]] * t for i in missing.which]
        return sub, where
    flat_idx = torch.cat([seg.index[i] for i in missing.which]).to(ids.device)
    lengths = [seg.index[i].numel() for i in missing.which]
    pos = inputs["position_ids"]
    pos = pos.expand(b, t) if pos.shape[0] != b else pos
    sub = {"input_ids": ids.reshape(-1).index_select(0, flat_idx).unsqueeze(0),
           "position_ids": pos.reshape(-1).index_select(0, flat_idx).unsqueeze(0)}
    if len(_document_starts(sub["position_ids"][0].cpu())) != len(lengths):
        return None
    lens = torch.tensor(lengths)
    cu = torch.cat([torch.zeros(1, dtype=torch.int64), lens.cumsum(0)]).to(torch.int32)
    extras = {"cu_seq_lens_q": cu, "cu_seq_lens_k": cu, "max_length_q": int(lens.max()),
              "max_length_k": int(lens.max()),
              "seq_idx": torch.repeat_interleave(torch.arange(len(lengths), dtype=torch.int32), lens).unsqueeze(0)}
    for name in _PACKED_EXTRAS:
        old = inputs.get(name)
        if old is not None:
            new = extras[name]
            sub[name] = new.to(old.device) if isinstance(old, torch.Tensor) else new
    where, off = [], 0
    for n in lengths:
        where.append(torch.arange(off, off + n))
        off += n
    return sub, where
