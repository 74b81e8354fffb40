"""fastfreeze._timing: run times recorded per run, discarded after a mark, settled into totals; reading changes nothing."""
from __future__ import annotations

import pytest
import torch

from fastfreeze import _timing
from fastfreeze._timing import RunTimes


def _fake_clock(monkeypatch, ticks):
    it = iter(ticks)
    monkeypatch.setattr(_timing.time, "perf_counter", lambda: next(it))


def test_runs_are_timed_marked_discarded_and_settled(monkeypatch):
    _fake_clock(monkeypatch, [0.0, 2.0, 10.0, 11.0, 20.0, 24.0])
    x = torch.zeros(1)
    times = RunTimes()
    assert times.seconds_per_token() is None
    times.stop(x, 5)  # no run under way: nothing recorded
    assert times.timings == []
    times.start(x), times.stop(x, 4)  # 2 s over 4 tokens
    mark = times.mark()
    times.start(x), times.stop(x, 100)  # 1 s: a run to forget (it included compilation, say)
    times.discard(mark)
    assert times.seconds_per_token() == pytest.approx(0.5) and times.t0 is None
    times.start(x), times.stop(x, 4)  # 4 s over 4 tokens
    assert times.seconds_per_token() == pytest.approx(6 / 8)
    assert len(times.timings) == 2 and (times.seconds, times.tokens) == (0.0, 0)  # reading settled nothing
    times.settle()
    assert times.timings == [] and (times.seconds, times.tokens) == (pytest.approx(6.0), 8)
    assert times.seconds_per_token() == pytest.approx(6 / 8)
