"""Step timing for bench_train: a hook that records the wall time between optimizer-step ends, and a round-robin scheduler that interleaves arms step by step.

Usage:
    results = RoundRobin(schedule).run(specs, ctx, arms.run_arm)   # one result dict per spec
"""
from __future__ import annotations

import threading
import time
import torch

from benchmarks.train.presets import ArmSpec, BenchContext, Schedule


class StepHook:
    """Records wall time between consecutive step ends; `RoundRobin` subclasses it to pause between windows."""

    def __init__(self, device: torch.device):
        self.device = device
        self.times: list[float] = []
        self._last: float | None = None
        self.peak_bytes: int | None = None

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def start(self) -> None:
        """Call right before the training loop starts."""
        self._sync()
        self._last = time.perf_counter()

    def step_end(self) -> None:
        self._sync()
        now = time.perf_counter()
        self.times.append(now - self._last)
        self._after_step()
        self._last = time.perf_counter()  # time spent paused is not the arm's

    def _after_step(self) -> None:
        pass


def make_step_callback(hook: StepHook):
    from transformers import TrainerCallback

    class _Clock(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            hook.step_end()

    return _Clock()


class RoundRobin:
    """Runs arms in threads that take turns: each arm's warm-up in sequence, then `rounds` windows of
    `window` steps across all arms, one arm active at a time (the others wait inside `step_end`).

    CUDA peak memory is measured per arm during its first turn: the other arms are paused and hold
    constant memory, so max_allocated - allocated(before the arm was built) is exactly this arm's peak.
    """

    def __init__(self, schedule: Schedule):
        self.schedule = schedule
        self.cond = threading.Condition()
        self.turn: int | None = None
        self.quota: dict[int, int] = {}

    class _Hook(StepHook):
        def __init__(self, rr: "RoundRobin", idx: int, device: torch.device):
            super().__init__(device)
            self.rr, self.idx = rr, idx

        def _after_step(self) -> None:
            rr = self.rr
            rr.quota[self.idx] -= 1
            if rr.quota[self.idx] > 0 or len(self.times) >= rr.schedule.steps:
                return
            with rr.cond:
                rr.turn = None
                rr.cond.notify_all()
                rr.cond.wait_for(lambda: rr.turn == self.idx)

        def wait_first_turn(self) -> None:
            with self.rr.cond:
                self.rr.cond.wait_for(lambda: self.rr.turn == self.idx)

    def run(self, specs: list[ArmSpec], ctx: BenchContext, arm_fn) -> list[dict]:
        """Run `arm_fn(spec, ctx, hook)` for every spec, interleaved; returns one result dict per spec."""
        hooks = [self._Hook(self, i, ctx.device) for i in range(len(specs))]
        results: list[dict] = [{} for _ in specs]
        done = [False] * len(specs)

        def body(i: int) -> None:
            hooks[i].wait_first_turn()
            try:
                results[i] = arm_fn(specs[i], ctx, hooks[i])
            except Exception as err:  # one broken arm must not hang or kill the others
                import traceback
                results[i] = {"error": f"{type(err).__name__}: {err}", "traceback": traceback.format_exc()}
            finally:
                with self.cond:
                    done[i] = True
                    self.turn = None
                    self.cond.notify_all()

        threads = [threading.Thread(target=body, args=(i,), daemon=True, name=specs[i].name) for i in range(len(specs))]
        for t in threads:
            t.start()
        s = self.schedule
        for i in range(len(specs)):
            base = self._cuda_begin(ctx.device)
            self._grant(i, s.warmup if s.rounds else s.steps, done)
            hooks[i].peak_bytes = self._cuda_peak(ctx.device, base)
        for _ in range(s.rounds):
            for i in range(len(specs)):
                self._grant(i, s.window, done)
        for i in range(len(specs)):  # let each arm finish (train() returns, results and cleanup)
            self._grant(i, 0, done)
            threads[i].join()
        for i, r in enumerate(results):
            r.setdefault("step_times", hooks[i].times)
            r["peak_bytes_cuda"] = hooks[i].peak_bytes
        return results

    def _grant(self, i: int, steps: int, done: list[bool]) -> None:
        with self.cond:
            if done[i]:
                return
            self.quota[i] = steps
            self.turn = i
            self.cond.notify_all()
            self.cond.wait_for(lambda: self.turn is None)

    @staticmethod
    def _cuda_begin(device) -> int | None:
        if device.type != "cuda":
            return None
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        return torch.cuda.memory_allocated(device)

    @staticmethod
    def _cuda_peak(device, base) -> int | None:
        if base is None:
            return None
        torch.cuda.synchronize(device)
        return torch.cuda.max_memory_allocated(device) - base
