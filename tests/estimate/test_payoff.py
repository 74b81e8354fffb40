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


RESULTS = __import__("pathlib").Path(__file__).resolve().parents[2] / "benchmarks" / "results"


def test_the_default_read_rate_is_the_committed_measurement():
    from fastfreeze.estimate.payoff import MEASURED_READ, read_rate_from_benchmark

    committed = read_rate_from_benchmark(RESULTS / "cache_read_cpu.json")
    assert MEASURED_READ.bytes_per_s == pytest.approx(committed.bytes_per_s, rel=1e-3)
    assert MEASURED_READ.source == committed.source


def test_read_rate_from_benchmark_reads_the_read_path_and_refuses_the_old_format(tmp_path):
    import json

    from fastfreeze.estimate.payoff import read_rate_from_benchmark

    meta = {"device": "CPU x", "date": "2026-12-07T10:00:00+00:00"}
    new = tmp_path / "new.json"
    new.write_text(json.dumps({"meta": meta, "result": {"read_path_GBps": 2.5, "GBps": {"memcpy": 9.0}}}))
    rate = read_rate_from_benchmark(new)
    assert rate.bytes_per_s == 2.5e9 and "CPU x, 2026-12-07" in rate.source
    old = tmp_path / "old.json"  # the first benchmark's fields: a rate bound by its own threads, not the read path
    old.write_text(json.dumps({"meta": meta, "result": {"warm_read_GBps": 0.06}}))
    with pytest.raises(ValueError, match="rerun the benchmark"):
        read_rate_from_benchmark(old)
    with pytest.raises(ValueError, match="rerun the benchmark"):
        read_rate_from_benchmark(tmp_path / "missing.json")
