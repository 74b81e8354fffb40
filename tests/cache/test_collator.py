"""Tests of the prefix cache data path: CachedBoundaryCollator, assemble, pickling, workers."""

import pickle

import pytest
import torch

from fastfreeze.cache import MemoryCache, example_key
from fastfreeze.cache import BOUNDARY_KEY, CachedBoundaryCollator
from fastfreeze.cache.collator import MISSING_KEY
from fastfreeze.cache import DiskCache

H = 6
VOCAB = 50
_EMB = torch.randn(VOCAB, H, generator=torch.Generator().manual_seed(0))


def fake_prefix(input_ids, position_ids):
    """A stand-in frozen prefix: depends only on each token's id and position (like a real one)."""
    return _EMB[input_ids] + 0.25 * position_ids.unsqueeze(-1).float()


class PadCollator:
    """Pads lists of token ids; left padding can add restarting position_ids (as packed/HF-style)."""

    def __init__(self, side="right", with_positions=False):
        self.side, self.with_positions = side, with_positions

    def __call__(self, features):
        t = max(len(f["input_ids"]) for f in features)
        ids, mask, pos = [], [], []
        for f in features:
            x, pad = f["input_ids"], t - len(f["input_ids"])
            p = list(range(len(x)))
            if self.side == "right":
                ids.append(x + [0] * pad), mask.append([1] * len(x) + [0] * pad), pos.append(p + [0] * pad)
            else:
                ids.append([0] * pad + x), mask.append([0] * pad + [1] * len(x)), pos.append([0] * pad + p)
        out = {"input_ids": torch.tensor(ids), "attention_mask": torch.tensor(mask)}
        if self.with_positions:
            out["position_ids"] = torch.tensor(pos)
        return out


FEATURES = [{"input_ids": [3, 4, 5]}, {"input_ids": [7, 8, 9, 10, 11]}, {"input_ids": [12]}]


def boundary_of(batch):
    """Reference boundary of a collated batch, zeros at padding; positions as the model would use."""
    ids, mask = batch["input_ids"], batch["attention_mask"]
    pos = batch.get("position_ids", torch.arange(ids.shape[1]).expand_as(ids))
    return fake_prefix(ids, pos) * mask.unsqueeze(-1)


def fill(cache, base, features):
    """Store each row's real tokens under the key of their ids and positions (the reference keying)."""
    batch = base(features)
    ids, mask = batch["input_ids"], batch["attention_mask"] != 0
    pos = batch.get("position_ids", torch.arange(ids.shape[1]).expand_as(ids))
    keys = [example_key(ids[b][mask[b]], pos[b][mask[b]]) for b in range(len(ids))]
    boundary = boundary_of(batch)
    assert cache.put_many(keys, [boundary[b][mask[b]] for b in range(len(ids))]) == len(keys)


@pytest.mark.parametrize("side,with_positions", [("right", False), ("left", False), ("left", True)])
def test_all_hit_batch_is_exact_scatter(side, with_positions):
    base = PadCollator(side, with_positions)
    cache = MemoryCache("fp")
    fill(cache, base, FEATURES)
    coll = CachedBoundaryCollator(base, cache, H, torch.float32, pin_memory=False)
    shuffled = [FEATURES[2], FEATURES[0], FEATURES[1]]  # batch composition/order must not matter
    batch = coll(shuffled)
    assert torch.equal(batch[BOUNDARY_KEY], boundary_of(base(shuffled)))
    assert cache.summary().hits == 3 and cache.summary().misses == 0


def test_right_padded_cache_serves_left_padded_with_positions():
    cache = MemoryCache("fp")
    fill(cache, PadCollator("right"), FEATURES)
    left = PadCollator("left", with_positions=True)
    batch = CachedBoundaryCollator(left, cache, H, torch.float32)(FEATURES)
    assert torch.equal(batch[BOUNDARY_KEY], boundary_of(left(FEATURES)))
    # Left padding without position_ids puts tokens at other positions: a different state, a miss
    # (rows 0 and 2; row 1 has no padding, so the same positions, a hit).
    batch = CachedBoundaryCollator(PadCollator("left"), cache, H, torch.float32)(FEATURES)
    assert batch[MISSING_KEY].which == [0, 2]


def test_partial_hit_fills_the_cached_rows_and_names_the_missing():
    base = PadCollator()
    cache = MemoryCache("fp")
    fill(cache, base, FEATURES[:2])
    coll = CachedBoundaryCollator(base, cache, H, torch.float32)
    batch = coll(FEATURES)
    missing = batch[MISSING_KEY]
    assert missing.which == [2] and missing.tokens == 1
    expected = boundary_of(base(FEATURES))
    expected[2] = 0  # the missing row stays zero until the trainer computes it
    assert torch.equal(batch[BOUNDARY_KEY], expected)
    assert (cache.summary().hits, cache.summary().misses) == (2, 1)


def test_no_hit_adds_nothing():
    base = PadCollator()
    cache = MemoryCache("fp")
    fill(cache, base, FEATURES[:1])
    batch = CachedBoundaryCollator(base, cache, H, torch.float32)(FEATURES[1:])
    assert set(batch) == {"input_ids", "attention_mask"}


def test_dtype_conversion_from_bf16_cache():
    base = PadCollator()
    cache = MemoryCache("fp", dtype=torch.bfloat16)
    fill(cache, base, FEATURES)
    batch = CachedBoundaryCollator(base, cache, H, torch.float32)(FEATURES)
    expected = boundary_of(base(FEATURES)).to(torch.bfloat16).float()
    assert batch[BOUNDARY_KEY].dtype == torch.float32 and torch.equal(batch[BOUNDARY_KEY], expected)


@pytest.mark.parametrize("kind", ["memory", "disk"])
def test_pickle_round_trip(tmp_path, kind):
    base = PadCollator("left", with_positions=True)
    cache = MemoryCache("fp") if kind == "memory" else DiskCache(tmp_path, "fp")
    fill(cache, base, FEATURES)
    cache.flush()
    coll = CachedBoundaryCollator(base, cache, H, torch.float32)
    expected = coll(FEATURES)[BOUNDARY_KEY]  # also opens the disk mmap before pickling
    clone = pickle.loads(pickle.dumps(coll))
    assert torch.equal(clone(FEATURES)[BOUNDARY_KEY], expected)


def test_dataloader_worker_hits_reach_parent_summary(tmp_path):
    base = PadCollator()
    cache = DiskCache(tmp_path, "fp")
    fill(cache, base, FEATURES)
    cache.flush()
    coll = CachedBoundaryCollator(base, cache, H, torch.float32)
    data = FEATURES + [{"input_ids": [20, 21]}]  # the last batch misses
    loader = torch.utils.data.DataLoader(data, batch_size=3, collate_fn=coll, num_workers=1)
    batches = list(loader)
    assert BOUNDARY_KEY in batches[0] and BOUNDARY_KEY not in batches[1]
    assert torch.equal(batches[0][BOUNDARY_KEY], boundary_of(base(FEATURES)))
    assert (cache.summary().hits, cache.summary().misses) == (3, 1)  # counted in the worker


def test_collator_bad_input():
    with pytest.raises(TypeError, match="PrefixCache"):
        CachedBoundaryCollator(PadCollator(), object(), H, torch.float32)
    with pytest.raises(ValueError, match="hidden_size"):
        CachedBoundaryCollator(PadCollator(), MemoryCache("fp"), 0, torch.float32)
    coll = CachedBoundaryCollator(lambda f: [1, 2], MemoryCache("fp"), H, torch.float32)
    with pytest.raises(ValueError, match="input_ids"):
        coll(FEATURES)


def _assemble_reference(rows, seg, hidden, dtype):
    """The former two-copy layout (zeros, then one index_copy_ of all rows concatenated)."""
    b, t = seg.shape
    out = torch.zeros(b * t, hidden, dtype=dtype)
    pairs = [(i, r) for i, r in zip(seg.index, rows) if r is not None]
    if pairs:
        out.index_copy_(0, torch.cat([i for i, _ in pairs]), torch.cat([r.to(dtype) for _, r in pairs]))
    return out.view(b, t, hidden)


def _mixed_segments():
    """Right/left padding, a mask with a hole, an empty row, and packed documents."""
    from fastfreeze.cache.segments import segment_batch

    ids = torch.arange(1, 25).view(4, 6)
    mask = torch.tensor([[1, 1, 1, 0, 0, 0], [0, 0, 1, 1, 1, 1], [1, 0, 1, 1, 0, 1], [0, 0, 0, 0, 0, 0]])
    padded = segment_batch(ids, mask)
    pos = torch.tensor([[0, 1, 2, 0, 1, 0], [0, 1, 2, 3, 4, 5]])
    packed = segment_batch(ids[:2], None, pos, split_documents=True)
    return [padded, packed]


@pytest.mark.parametrize("cache_dtype,out_dtype", [(torch.float32, torch.float32), (torch.bfloat16, torch.float32),
                                                   (torch.float32, torch.bfloat16)])
def test_assemble_equals_the_two_copy_layout_bitwise(cache_dtype, out_dtype):
    from fastfreeze.cache.collator import assemble

    g = torch.Generator().manual_seed(3)
    for seg in _mixed_segments():
        rows = [torch.randn(i.numel(), H, generator=g).to(cache_dtype) for i in seg.index]
        for drop in (None, 0, len(rows) - 1):  # all hit, first missing, last missing
            got_rows = [None if j == drop else r for j, r in enumerate(rows)]
            out = assemble(got_rows, seg, H, out_dtype)
            assert out.dtype == out_dtype
            assert torch.equal(out, _assemble_reference(got_rows, seg, H, out_dtype))
            assert not out.view(-1, H)[torch.nonzero(~_covered(seg, got_rows)).flatten()].any()


def _covered(seg, rows):
    cov = torch.zeros(seg.shape[0] * seg.shape[1], dtype=torch.bool)
    for i, r in zip(seg.index, rows):
        if r is not None:
            cov[i] = True
    return cov


def test_assemble_refuses_rows_that_do_not_fit_their_segments():
    """What the removed scatter_rows test checked, on its successor: a row of another length or width is
    an error naming the likely cause, never a silently misplaced boundary."""
    from fastfreeze.cache.collator import assemble
    from fastfreeze.cache.segments import segment_batch

    seg = segment_batch(torch.arange(1, 9).view(2, 4), torch.tensor([[1, 1, 0, 0], [0, 1, 1, 1]]))
    rows = [torch.randn(2, H), torch.randn(3, H)]
    assert torch.equal(assemble(rows, seg, H, torch.float32)[1, 1:], rows[1])
    with pytest.raises(ValueError, match="fingerprint"):
        assemble([rows[1], rows[0]], seg, H, torch.float32)  # swapped: 3 rows for 2 tokens
    with pytest.raises(ValueError, match="hidden=6"):
        assemble([rows[0], torch.randn(3, H + 1)], seg, H, torch.float32)


def test_assemble_copies_each_row_once():
    """Row bytes are written once: no torch.cat of the rows, and only padding gets zeros."""
    from torch.utils._python_dispatch import TorchDispatchMode

    from fastfreeze.cache.collator import assemble
    from fastfreeze.cache.segments import segment_batch

    class Written(TorchDispatchMode):
        """Counts float elements each op writes (views and the uninitialised output write none)."""

        def __init__(self):
            super().__init__()
            self.floats = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            name = func.overloadpacket.__name__
            if func.is_view or name.startswith("empty") or not isinstance(out, torch.Tensor) \
                    or not out.is_floating_point():
                return out
            if name in ("index_fill_", "index_copy_", "index_put_"):
                self.floats += args[2].numel() * out[0].numel() if name != "index_put_" else args[2].numel()
            else:  # copy_, fill_, zeros, cat, _to_copy...: every element of the result
                self.floats += out.numel()
            return out

    ids = torch.arange(1, 17).view(2, 8)
    seg = segment_batch(ids, torch.tensor([[1] * 8, [0, 0, 0, 1, 1, 1, 1, 1]]))
    rows = [torch.randn(i.numel(), H) for i in seg.index]
    with Written() as w:
        assemble(rows, seg, H, torch.float32)
    assert w.floats == 16 * H  # 13 row tokens copied once + 3 padding tokens zeroed
