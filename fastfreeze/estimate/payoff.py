"""When the boundary cache pays: its size, reading a boundary vs recomputing the prefix, and the epoch it has paid for itself.

Per token, a cache hit replaces the prefix's forward (``prefix_flops`` at the device's achieved FLOP/s)
by reading ``hidden x dtype bytes`` from the cache. The read is counted in full on top of the suffix's
compute (HF Trainer's default ``dataloader_num_workers=0`` runs the collator, and so the read, in the
training process between steps; with workers part of it overlaps, so this errs against the cache). Epoch 1 computes every boundary
and writes it; from epoch 2 on every token is a hit. The cache has paid for itself at the first epoch e
where ``cold + write + (e - 1) x warm <= e x cold``; never when a warm step is not faster than a cold one.

Device FLOP/s: the named cards carry their spec-sheet dense bf16 tensor rate; the achieved rate is that
times ``mfu`` (model FLOP utilisation, an assumption the report prints), or pass a measured
``flops`` directly (``fastfreeze estimate --flops``).

The read rate is measured, never assumed: by default the one `python -m benchmarks.cache` measured for
the read path (``MEASURED_READ``), or the rate in a JSON that benchmark wrote on your machine
(:func:`read_rate_from_benchmark`).

Usage::

    dev = Device.named("h100")            # or Device("my box", flops=3.1e11)
    p = payoff(shape, k=16, ckpt=False, dev=dev, read_bytes_per_s=2e9, dataset_tokens=1e9, epochs=3)
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

from .flops import prefix_flops, step_flops
from .shape import ModelShape

__all__ = ["CARDS", "MEASURED_READ", "Device", "Payoff", "ReadRate", "cache_bytes", "payoff", "read_rate_from_benchmark"]

# Spec-sheet dense bf16 tensor-core FLOP/s (no sparsity).
CARDS = {
    "h100": ("NVIDIA H100 SXM", 989e12),
    "h200": ("NVIDIA H200 SXM", 989e12),
    "a100": ("NVIDIA A100 SXM", 312e12),
    "l40s": ("NVIDIA L40S", 362e12),
    "l4": ("NVIDIA L4", 121e12),
}
DEFAULT_MFU = 0.4


@dataclass(frozen=True)
class ReadRate:
    """Bytes/s the cache's read path delivers boundaries at, and where that number comes from."""

    bytes_per_s: float
    source: str


# The read path (get_many + assemble, page cache warm, one thread) measured by `python -m benchmarks.cache`;
# tests/estimate/test_payoff.py checks it equals benchmarks/results/cache_read_cpu.json.
MEASURED_READ = ReadRate(1.289e9, "measured by benchmarks.cache on CPU x86_64, 2 cores, 2026-12-07")


def read_rate_from_benchmark(path) -> ReadRate:
    """The read path's rate from a JSON written by ``python -m benchmarks.cache`` (run it on your machine).

    Usage: ``rate = read_rate_from_benchmark("benchmarks/results/cache_read_cpu.json")``"""
    try:
        res = json.loads(Path(path).read_text())
        rate, meta = float(res["result"]["read_path_GBps"]) * 1e9, res["meta"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ValueError(f"{path} is not a `python -m benchmarks.cache` result with result.read_path_GBps ({e!r}); "
                         "rerun the benchmark (its first version did not measure the read path alone)") from None
    if not rate > 0:
        raise ValueError(f"{path}: read_path_GBps must be positive, got {rate / 1e9}")
    return ReadRate(rate, f"measured by benchmarks.cache on {meta.get('device', '?')}, {meta.get('date', '?')[:10]}")


@dataclass(frozen=True)
class Device:
    """A device by its achieved FLOP/s (``flops``)."""

    name: str
    flops: float

    @classmethod
    def named(cls, card: str, mfu: float = DEFAULT_MFU) -> "Device":
        key = card.lower().replace("-", "").replace(" ", "")
        if key not in CARDS:
            raise ValueError(f"unknown device {card!r}; choose one of {sorted(CARDS)} or pass --flops")
        if not 0 < mfu <= 1:
            raise ValueError(f"mfu must be in (0, 1], got {mfu}")
        label, peak = CARDS[key]
        return cls(f"{label} ({peak / 1e12:.0f} TFLOP/s bf16 dense x mfu {mfu:g})", peak * mfu)


def cache_bytes(shape: ModelShape, dataset_tokens: float) -> float:
    """Bytes of boundary data for `dataset_tokens` real tokens (stored once, whatever the number of
    epochs; shard manifests add well under 1%)."""
    return float(dataset_tokens) * shape.hidden * shape.dtype_bytes


@dataclass(frozen=True)
class Payoff:
    """Seconds per token and the verdict; ``paid_off_epoch`` None: the cache never pays."""

    prefix_s: float  # recomputing the prefix
    read_s: float  # reading the boundary
    cold_s: float  # a step without a hit (prefix runs)
    warm_s: float  # a step served by the cache (suffix compute + read)
    write_s: float  # storing the boundary once
    read_beats_recompute: bool
    paid_off_epoch: int | None
    epoch_hours: list  # (epoch, hours without cache, hours with cache), cumulative


def payoff(shape: ModelShape, k: int, ckpt: bool, dev: Device, read_bytes_per_s: float, dataset_tokens: float,
           epochs: int, write_bytes_per_s: float | None = None) -> Payoff:
    if read_bytes_per_s <= 0 or dev.flops <= 0 or epochs < 1:
        raise ValueError("read rate and FLOP/s must be positive and epochs >= 1")
    per_tok = shape.hidden * shape.dtype_bytes
    prefix_s = prefix_flops(shape, k) / dev.flops
    read_s = per_tok / read_bytes_per_s
    write_s = per_tok / (write_bytes_per_s or read_bytes_per_s)
    cold_s = step_flops(shape, "ff", k, ckpt) / dev.flops
    warm_s = step_flops(shape, "ff-warm", k, ckpt) / dev.flops + read_s
    paid = None
    if warm_s < cold_s:
        # smallest e >= 1 with (cold + write) + (e - 1) warm <= e cold, i.e. e >= 1 + write / (cold - warm)
        paid = max(1, math.ceil(1 + write_s / (cold_s - warm_s) - 1e-9))
    rows, without, with_cache = [], 0.0, 0.0
    for e in range(1, epochs + 1):
        without += cold_s * dataset_tokens
        with_cache += ((cold_s + write_s) if e == 1 else warm_s) * dataset_tokens
        rows.append((e, without / 3600, with_cache / 3600))
    return Payoff(prefix_s, read_s, cold_s, warm_s, write_s, read_s < prefix_s, paid, rows)
