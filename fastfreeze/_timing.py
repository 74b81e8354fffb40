"""Wall times of repeated runs, taken with no sync in the step: perf_counter on CPU, CUDA events read late.

Usage:
    times = RunTimes()
    times.start(x); y = run(x); times.stop(y, tokens=x.numel())   # x, y: tensors on the run's device
    times.settle(); times.seconds_per_token()
"""
from __future__ import annotations

import time

import torch


def _clock(like):
    """Now, on the device of `like`: a recorded CUDA event (read later), else perf_counter."""
    if isinstance(like, torch.Tensor) and like.is_cuda:
        ev = torch.cuda.Event(enable_timing=True)
        ev.record()
        return ev
    return time.perf_counter()


class RunTimes:
    """Timed runs as (start, end, tokens) in `timings` until `settle` folds them into `seconds` and
    `tokens`; `t0` is the start of the run under way (None: none is)."""

    def __init__(self) -> None:
        self.t0 = None
        self.timings: list = []
        self.seconds = 0.0
        self.tokens = 0

    def start(self, like) -> None:
        self.t0 = _clock(like)

    def stop(self, like, tokens: int) -> None:
        """End the run under way (if one was started) over `tokens` tokens."""
        if self.t0 is not None:
            self.timings.append((self.t0, _clock(like), tokens))
            self.t0 = None

    def mark(self) -> int:
        """A position in the record of unsettled runs (see `discard`)."""
        return len(self.timings)

    def discard(self, mark: int) -> None:
        """Forget the runs timed since `mark` (unless settled since)."""
        del self.timings[mark:]

    def totals(self) -> tuple[float, int]:
        """(seconds, tokens) of every timed run: the settled totals plus the runs not yet settled."""
        seconds, tokens = self.seconds, self.tokens
        for start, end, n in self.timings:
            if isinstance(start, float):
                seconds += end - start
            else:
                end.synchronize()
                seconds += start.elapsed_time(end) / 1000.0
            tokens += n
        return seconds, tokens

    def settle(self) -> None:
        """Fold the timed runs into the totals (waiting for their CUDA events) and empty the record."""
        self.seconds, self.tokens = self.totals()
        self.timings.clear()

    def seconds_per_token(self) -> float | None:
        """Seconds per token over every timed run, settled or not (only reads); None before any."""
        seconds, tokens = self.totals()
        return seconds / tokens if tokens else None
