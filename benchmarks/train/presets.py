"""What a bench_train run is made of: the schedule, the presets (model shapes), one arm's spec, the shared context and its data.

Usage:
    ctx = BenchContext(PRESETS["toy"], device=torch.device("cpu"), workdir="/tmp/b")
    spec = ArmSpec(kind="ff-warm", k=2, ckpt=False)
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

from fastfreeze.estimate.shape import ModelShape


@dataclass(frozen=True)
class Schedule:
    """warmup steps (sequential, unmeasured) then `rounds` x `window` measured steps per arm, interleaved."""

    warmup: int
    rounds: int
    window: int

    @property
    def steps(self) -> int:
        return self.warmup + self.rounds * self.window


@dataclass(frozen=True, kw_only=True)
class Preset(ModelShape):
    """A model shape (what the FLOP and memory models read) plus what a bench_train run does with it."""

    k: int
    examples: int  # a fixed set revisited every epoch, so a warm cache is really hit
    schedule: Schedule
    sweep_schedule: Schedule

    def sweep_ks(self) -> list[int]:
        L = self.layers
        return sorted({0, min(2, L), L // 4, L // 2, (3 * L) // 4})


def _sched(warmup: int, rounds: int, window: int) -> Schedule:
    return Schedule(warmup=warmup, rounds=rounds, window=window)


PRESETS = {
    "toy": Preset(name="toy", layers=4, hidden=64, intermediate=128, heads=4, kv_heads=2, vocab=256, seq=32,
                  batch=4, dtype="float32", k=2, examples=16, schedule=_sched(1, 1, 1), sweep_schedule=_sched(1, 1, 1)),
    # On CPU step 2 is still ~2x slow (allocator warm-up), hence 2 warm-up steps.
    "cpu-small": Preset(name="cpu-small", layers=12, hidden=512, intermediate=1376, heads=8, kv_heads=8, vocab=8192,
                        seq=256, batch=8, dtype="float32", k=6, examples=64, schedule=_sched(2, 5, 1),
                        sweep_schedule=_sched(2, 5, 1)),
    # Llama-3.2-1B shapes, but with an untied head (a frozen tied embedding would freeze the head too).
    "gpu-1b": Preset(name="gpu-1b", layers=16, hidden=2048, intermediate=8192, heads=32, kv_heads=8, vocab=128256,
                     seq=2048, batch=4, dtype="bfloat16", k=8, examples=64, schedule=_sched(2, 3, 2),
                     sweep_schedule=_sched(1, 5, 1)),
    # 8 of Llama-3-8B's 32 layers, full vocabulary.
    "gpu-8b-slice": Preset(name="gpu-8b-slice", layers=8, hidden=4096, intermediate=14336, heads=32, kv_heads=8,
                           vocab=128256, seq=2048, batch=2, dtype="bfloat16", k=4, examples=32,
                           schedule=_sched(2, 3, 2), sweep_schedule=_sched(1, 5, 1)),
}


@dataclass(frozen=True)
class ArmSpec:
    kind: str
    k: int
    ckpt: bool

    @property
    def name(self) -> str:
        return f"{self.kind}{'+ckpt' if self.ckpt else ''}@k={self.k}"


@dataclass
class BenchContext:
    """What every arm of one run shares: preset, device, data, schedule, scratch directory."""

    preset: Preset
    device: torch.device
    workdir: str
    schedule: Schedule | None = None
    kernels: str = "auto"
    examples: list = field(default_factory=list)
    fused_loss: bool = True  # FreezeConfig.fused_loss of the FastFreeze arms
    # step_probe(step_index, trainer, inputs) -> a context manager around that step's forward + backward,
    # or None (benchmarks/memory/bench.py measures memory this way); the trainer's compute_loss calls
    # `.mark("forward")` on it when it returns.
    step_probe: object = None

    def __post_init__(self):
        self.schedule = self.schedule or self.preset.schedule
        if not self.examples:
            self.examples = make_examples(self.preset)

    @property
    def dtype(self) -> torch.dtype:
        return getattr(torch, self.preset.dtype)

    @property
    def max_steps(self) -> int:
        return self.schedule.steps


def make_examples(p: Preset, seed: int = 1234) -> list[dict]:
    """Random token rows, lengths uniform in [seq/2, seq], fixed seed; labels = input_ids."""
    g = torch.Generator().manual_seed(seed)
    rows = []
    for _ in range(p.examples):
        n = int(torch.randint(p.seq // 2, p.seq + 1, (1,), generator=g))
        ids = torch.randint(1, p.vocab, (n,), generator=g).tolist()
        rows.append({"input_ids": ids, "labels": list(ids)})
    return rows
