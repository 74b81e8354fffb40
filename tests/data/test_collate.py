"""fastfreeze.data.PaddingCollator: the one pad collator (right / left, fixed width, kept columns, labels)."""
from __future__ import annotations

import pytest
import torch

from fastfreeze.data import IGNORE_INDEX, PaddingCollator


def test_collator_pads_right_and_left_and_drops_other_columns(qa, tok):
    rows = [qa[i] for i in range(4)]
    lengths = [len(r["input_ids"]) for r in rows]
    assert len(set(lengths)) > 1, "pick rows of different lengths"
    width = max(lengths)
    right = PaddingCollator(tok.pad_token_id)(rows)
    assert set(right) == {"input_ids", "attention_mask", "labels"}
    assert all(v.dtype == torch.long and v.shape == (4, width) for v in right.values())
    left = PaddingCollator(tok.pad_token_id, padding_side="left")(rows)
    for i, r in enumerate(rows):
        n, pad = len(r["input_ids"]), width - len(r["input_ids"])
        assert right["input_ids"][i, :n].tolist() == r["input_ids"]
        assert right["input_ids"][i, n:].tolist() == [tok.pad_token_id] * pad
        assert right["attention_mask"][i].tolist() == [1] * n + [0] * pad
        assert right["labels"][i].tolist() == r["labels"] + [IGNORE_INDEX] * pad
        assert left["input_ids"][i].tolist() == [tok.pad_token_id] * pad + r["input_ids"]
        assert left["attention_mask"][i].tolist() == [0] * pad + [1] * n
        assert left["labels"][i].tolist() == [IGNORE_INDEX] * pad + r["labels"]
    kept = PaddingCollator(tok.pad_token_id, pad_to_multiple_of=8, keep_columns=("prompt_len",))(rows)
    assert kept["input_ids"].shape[1] % 8 == 0 and kept["input_ids"].shape[1] >= width
    assert kept["prompt_len"].tolist() == [r["prompt_len"] for r in rows]
    # Tensors in, same result.
    as_tensors = [{k: torch.tensor(r[k]) for k in ("input_ids", "attention_mask", "labels")} for r in rows]
    assert torch.equal(PaddingCollator(tok.pad_token_id)(as_tensors)["labels"], right["labels"])


def test_collator_errors():
    with pytest.raises(ValueError, match="padding_side must be 'right' or 'left'"):
        PaddingCollator(0, padding_side="middle")
    with pytest.raises(ValueError, match="pass tokenizer.pad_token_id"):
        PaddingCollator(None)
    with pytest.raises(ValueError, match="needs 'input_ids'"):
        PaddingCollator(0)([{"text": "x"}])
    with pytest.raises(ValueError, match="some rows have 'labels'"):
        PaddingCollator(0)([{"input_ids": [1, 2], "labels": [1, 2]}, {"input_ids": [3]}])
    with pytest.raises(ValueError, match="empty batch"):
        PaddingCollator(0)([])


def test_pad_to_is_a_minimum_width_and_labels_can_default_to_input_ids():
    rows = [{"input_ids": [5, 6, 7]}, {"input_ids": [8], "labels": [-100]}]
    batch = PaddingCollator(0, pad_to=5, labels_from_input_ids=True)(rows)
    assert batch["input_ids"].tolist() == [[5, 6, 7, 0, 0], [8, 0, 0, 0, 0]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1, 0, 0], [1, 0, 0, 0, 0]]
    assert batch["labels"].tolist() == [[5, 6, 7, -100, -100], [-100, -100, -100, -100, -100]]
    wide = PaddingCollator(0, pad_to=2)([{"input_ids": [1, 2, 3]}])  # longer rows are not cut
    assert wide["input_ids"].shape == (1, 3) and "labels" not in wide
    with pytest.raises(ValueError, match="pad_to must be None or an int >= 1"):
        PaddingCollator(0, pad_to=0)
