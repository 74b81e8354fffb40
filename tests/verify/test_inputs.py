"""fastfreeze.verify.inputs: rows from datasets and lists, text grouped into blocks, pad ids, how many rows a run needs."""
from __future__ import annotations

import datasets
import pytest

from fastfreeze.verify import VerifyError
from fastfreeze.verify.inputs import as_dataset, group_texts, pad_token_id, rows_needed


class _CharTokenizer:
    """One id per character; a special token (0) at the start of every text, as a tokenizer with BOS adds."""

    pad_token_id = eos_token_id = None

    def __call__(self, texts, **kw):
        return {"input_ids": [[0] + [ord(c) for c in t] for t in texts]}


def test_group_texts_concatenates_the_whole_stream_and_drops_the_tail():
    blocks, total = group_texts(["ab", "cde", "f"], _CharTokenizer(), block_size=3)
    assert total == 9 and blocks == [[0, 97, 98], [0, 99, 100], [101, 0, 102]]
    # Batches of texts are grouped as one stream: nothing is lost between them.
    assert group_texts(["ab", "cde", "f"], _CharTokenizer(), 3, batch=1)[0] == blocks
    assert group_texts(["ab", "cde", "f"], _CharTokenizer(), 3, limit=1)[0] == blocks[:1]


def test_rows_needed_halves_with_a_cache():
    assert rows_needed(8, 4, 2, cache=False) == 64 and rows_needed(8, 4, 2, cache=True) == 32
    assert rows_needed(3, 4, 1, cache=True) == 8  # ceil(3 / 2) steps of rows: the rest is a second epoch


def test_pad_token_id_falls_back_to_eos_then_zero():
    class Tok:
        pad_token_id, eos_token_id = None, 7

    assert pad_token_id(Tok()) == 7 and pad_token_id(None) == 0


def test_as_dataset_keeps_the_model_columns_and_refuses_text():
    ds = as_dataset([{"input_ids": [1, 2], "labels": [1, 2], "text": "x"}])
    assert isinstance(ds, datasets.Dataset) and ds.column_names == ["input_ids", "labels"]
    with pytest.raises(VerifyError, match="input_ids"):
        as_dataset([{"text": "hi"}])
