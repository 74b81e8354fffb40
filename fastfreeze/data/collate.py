"""The one pad collator: pads input_ids / attention_mask / labels into tensors, with the options every caller needs.

Usage::

    from fastfreeze.data import PaddingCollator
    Trainer(..., data_collator=PaddingCollator(tok.pad_token_id))
    PaddingCollator(0, pad_to=12, labels_from_input_ids=True)   # fixed width, causal-LM labels
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

__all__ = ["IGNORE_INDEX", "PaddingCollator"]

IGNORE_INDEX = -100  # label value that torch's cross-entropy (and HF models) skip


def _check_width(name: str, value: int | None) -> None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
        raise ValueError(f"PaddingCollator.{name} must be None or an int >= 1, got {value!r}")


@dataclass
class PaddingCollator:
    """Pads ``input_ids`` / ``attention_mask`` / ``labels`` to the longest row; returns torch tensors.

    Pads input_ids with ``pad_token_id``, attention_mask with 0, labels with -100. A row without an
    attention_mask attends to all its tokens. Other columns are dropped (strings, ids,
    prompt_len...) unless named in ``keep_columns`` (int columns, returned as a 1-D tensor).
    ``padding_side="left"`` is for batched generation. ``pad_to`` is a minimum width (a fixed width
    makes a row's prefix output the same bits in every batch, which cache comparisons need);
    ``pad_to_multiple_of`` rounds the width up. Rows have labels all or none, unless
    ``labels_from_input_ids``, which gives a row without labels its input_ids (plain causal-LM
    training). Rows may hold lists or tensors.

    Usage: ``Trainer(..., data_collator=PaddingCollator(tok.pad_token_id))``.
    """

    pad_token_id: int
    padding_side: str = "right"
    pad_to_multiple_of: int | None = None
    keep_columns: tuple[str, ...] = ()
    pad_to: int | None = None
    labels_from_input_ids: bool = False

    def __post_init__(self) -> None:
        if isinstance(self.pad_token_id, bool) or not isinstance(self.pad_token_id, int) or self.pad_token_id < 0:
            raise ValueError(
                f"PaddingCollator.pad_token_id must be a non-negative int, got {self.pad_token_id!r}; "
                "pass tokenizer.pad_token_id (set tokenizer.pad_token first if it is None)"
            )
        if self.padding_side not in ("right", "left"):
            raise ValueError(f"PaddingCollator.padding_side must be 'right' or 'left', got {self.padding_side!r}")
        _check_width("pad_to_multiple_of", self.pad_to_multiple_of)
        _check_width("pad_to", self.pad_to)
        self.keep_columns = tuple(self.keep_columns)

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        if not features:
            raise ValueError("PaddingCollator got an empty batch")
        if any("input_ids" not in f for f in features):
            raise ValueError(
                "PaddingCollator: every row needs 'input_ids'; tokenize with tokenize_qa / tokenize_bios first"
            )
        rows = [_as_list(f["input_ids"]) for f in features]
        width = max(max(len(r) for r in rows), self.pad_to or 0)
        if self.pad_to_multiple_of:
            width = -(-width // self.pad_to_multiple_of) * self.pad_to_multiple_of
        masks = [
            _as_list(f["attention_mask"]) if "attention_mask" in f else [1] * len(r) for f, r in zip(features, rows)
        ]
        batch = {
            "input_ids": self._pad(rows, width, self.pad_token_id),
            "attention_mask": self._pad(masks, width, 0),
        }
        labels = self._labels(features)
        if labels is not None:
            batch["labels"] = self._pad(labels, width, IGNORE_INDEX)
        for col in self.keep_columns:
            if any(col not in f for f in features):
                raise ValueError(f"PaddingCollator: keep_columns names {col!r} but a row lacks it")
            batch[col] = torch.tensor([int(f[col]) for f in features], dtype=torch.long)
        return batch

    def _labels(self, features: list[dict[str, Any]]) -> list[list[int]] | None:
        if self.labels_from_input_ids:
            return [_as_list(f["labels"] if "labels" in f else f["input_ids"]) for f in features]
        has_labels = ["labels" in f for f in features]
        if not any(has_labels):
            return None
        if not all(has_labels):
            raise ValueError("PaddingCollator: some rows have 'labels' and some do not; tokenize all rows the same way")
        return [_as_list(f["labels"]) for f in features]

    def _pad(self, rows: list[list[int]], width: int, value: int) -> torch.Tensor:
        out = torch.full((len(rows), width), value, dtype=torch.long)
        for i, r in enumerate(rows):
            if len(r) == 0:
                continue
            if self.padding_side == "right":
                out[i, : len(r)] = torch.tensor(r, dtype=torch.long)
            else:
                out[i, width - len(r) :] = torch.tensor(r, dtype=torch.long)
        return out


def _as_list(x: Any) -> list[int]:
    if isinstance(x, torch.Tensor):
        return x.tolist()
    return list(x)
