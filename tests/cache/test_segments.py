"""Tests of the cache segments: one per padded row, one per packed document; sub-batches of the missing ones."""
import pickle

import pytest
import torch

from fastfreeze.cache import example_key
from fastfreeze.cache.segments import MissingSegments, missing_inputs, segment_batch

DOCS = [[5, 6, 7], [8, 9], [10, 11, 12, 13]]


def packed(docs, extras=True):
    ids = torch.tensor([sum(docs, [])])
    pos = torch.cat([torch.arange(len(d)) for d in docs]).unsqueeze(0)
    out = {"input_ids": ids, "position_ids": pos}
    if extras:
        lens = torch.tensor([len(d) for d in docs])
        out["cu_seq_lens_q"] = torch.cat([torch.zeros(1, dtype=torch.int64), lens.cumsum(0)]).to(torch.int32)
    return out


def test_packed_row_splits_into_documents_keyed_like_the_document_alone():
    b = packed(DOCS)
    seg = segment_batch(b["input_ids"], None, b["position_ids"], split_documents=True)
    assert seg.packed and seg.keys == [example_key(torch.tensor(d), torch.arange(len(d))) for d in DOCS]
    # ... which is also the key of the same document as a right-padded row: one entry serves both.
    padded = torch.tensor([[8, 9, 0]])
    assert segment_batch(padded, torch.tensor([[1, 1, 0]])).keys[0] == seg.keys[1]
    assert [i.tolist() for i in seg.index] == [[0, 1, 2], [3, 4], [5, 6, 7, 8]]
    # Other packings of the same documents give the same keys.
    other = packed([DOCS[2], DOCS[0]])
    assert segment_batch(other["input_ids"], None, other["position_ids"], True).keys == [seg.keys[2], seg.keys[0]]


def test_without_the_check_or_with_a_mask_a_row_is_one_segment():
    b = packed(DOCS)
    whole = segment_batch(b["input_ids"], None, b["position_ids"], split_documents=False)
    assert len(whole) == 1 and not whole.packed
    mask = torch.ones_like(b["input_ids"])  # a mask given: transformers does not separate the documents
    assert len(segment_batch(b["input_ids"], mask, b["position_ids"], split_documents=True)) == 1


def test_padded_rows_are_keyed_by_their_real_tokens():
    ids = torch.tensor([[1, 2, 3, 0], [4, 5, 6, 7]])
    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 1, 1]])
    seg = segment_batch(ids, mask, None, split_documents=True)
    real = [torch.tensor([1, 2, 3]), torch.tensor([4, 5, 6, 7])]
    assert seg.keys == [example_key(r, torch.arange(len(r))) for r in real]
    assert [i.tolist() for i in seg.index] == [[0, 1, 2], [4, 5, 6, 7]]


def test_right_padding_key_equals_unpadded():
    ids = torch.tensor([11, 12, 13])
    unpadded = segment_batch(ids[None]).keys
    padded = segment_batch(torch.tensor([[11, 12, 13, 0, 0]]), torch.tensor([[1, 1, 1, 0, 0]])).keys
    assert unpadded == padded == [example_key(ids, torch.arange(3))]


def test_left_padding_changes_key_unless_positions_given():
    right = segment_batch(torch.tensor([[11, 12, 13, 0]]), torch.tensor([[1, 1, 1, 0]])).keys
    left_mask = torch.tensor([[0, 1, 1, 1]])
    left_ids = torch.tensor([[0, 11, 12, 13]])
    # No position_ids: HF uses arange(T), so the real tokens sit at 1..3 and the state differs.
    assert segment_batch(left_ids, left_mask).keys != right
    # Explicit positions that restart at the first real token: same example, same key.
    pos = torch.tensor([[0, 0, 1, 2]])
    assert segment_batch(left_ids, left_mask, pos).keys == right


def test_segment_batch_bad_input():
    with pytest.raises(ValueError, match=r"\[B, T\]"):
        segment_batch(torch.arange(3))
    with pytest.raises(ValueError, match="attention_mask"):
        segment_batch(torch.zeros(2, 3, dtype=torch.long), torch.ones(2, 4))


def test_missing_documents_form_one_packed_row_with_rebuilt_extras():
    b = packed(DOCS)
    seg = segment_batch(b["input_ids"], None, b["position_ids"], True)
    missing = pickle.loads(pickle.dumps(MissingSegments(seg, [0, 2])))  # crosses DataLoader workers
    sub, where = missing_inputs(b, missing)
    assert sub["input_ids"].tolist() == [DOCS[0] + DOCS[2]]
    assert sub["position_ids"].tolist() == [[0, 1, 2, 0, 1, 2, 3]]
    assert sub["cu_seq_lens_q"].tolist() == [0, 3, 7] and "max_length_q" not in sub  # only extras the batch had
    assert [w.tolist() for w in where] == [[0, 1, 2], [3, 4, 5, 6]] and missing.tokens == 7


def test_missing_documents_that_would_merge_are_not_batched_alone():
    # The second document continues the first one's positions once the middle one is left out.
    ids = torch.tensor([[1, 2, 3, 4, 5]])
    pos = torch.tensor([[0, 1, 0, 2, 3]])
    seg = segment_batch(ids, None, pos, True)
    assert len(seg) == 3
    assert missing_inputs({"input_ids": ids, "position_ids": pos}, MissingSegments(seg, [0, 2])) is None


def test_missing_padded_rows_keep_their_width_mask_and_positions():
    ids = torch.tensor([[1, 2, 0], [3, 4, 5], [6, 0, 0]])
    mask = (ids != 0).long()
    seg = segment_batch(ids, mask, None)
    sub, where = missing_inputs({"input_ids": ids, "attention_mask": mask}, MissingSegments(seg, [0, 2]))
    assert sub["input_ids"].tolist() == [[1, 2, 0], [6, 0, 0]] and sub["attention_mask"].tolist() == [[1, 1, 0], [1, 0, 0]]
    assert [w.tolist() for w in where] == [[0, 1], [3]]
