"""When the cache pays: read vs recompute, and the break-even epoch from the cumulative hours."""
import pytest

from fastfreeze.estimate.payoff import Device, cache_bytes, payoff
from fastfreeze.estimate.shape import ModelShape

SHAPE = ModelShape("t", layers=32, hidden=4096, intermediate=14336, heads=32, kv_heads=8, vocab=128256, seq=2048, batch=4)


def test_break_even_epoch_is_the_first_where_the_cache_is_not_slower():
    for read in (0.5e9, 2e9, 8e9, 50e9):
        p = payoff(SHAPE, 16, False, Device.named("h100"), read, dataset_tokens=1e8, epochs=30)
        first = next((e for e, without, with_cache in p.epoch_hours if with_cache <= without * (1 + 1e-12)), None)
        assert p.paid_off_epoch == first, read


def test_slow_reads_never_pay_and_fast_reads_beat_recomputing():
    slow = payoff(SHAPE, 16, False, Device.named("h100"), 1e7, dataset_tokens=1e6, epochs=3)
    assert not slow.read_beats_recompute and slow.paid_off_epoch is None
    fast = payoff(SHAPE, 16, False, Device.named("h100"), 25e9, dataset_tokens=1e6, epochs=3)
    assert fast.read_beats_recompute and fast.paid_off_epoch == 2
    # A slower device makes the prefix dearer, so the same disk pays sooner relative to it.
    assert payoff(SHAPE, 16, False, Device("cpu", 1e12), 1e8, 1e6, 3).read_beats_recompute


def test_sizes_and_bad_inputs():
    assert cache_bytes(SHAPE, 1e6) == 8192e6
    with pytest.raises(ValueError, match="unknown device"):
        Device.named("tpu-v9")
    with pytest.raises(ValueError, match="mfu"):
        Device.named("h100", mfu=1.5)
