"""pytest-benchmark micro-benchmarks of the FastFreeze hot paths: prefix forward, cache read path, one suffix step.

Not collected by CI (`pytest tests/`); the repo's addopts disable benchmarks, so enable them:
    python -m pytest benchmarks/test_bench_micro.py --benchmark-enable -q
    python -m pytest benchmarks/test_bench_micro.py --benchmark-enable --benchmark-json out.json   # keep results
Set BENCH_MICRO_PRESET=cpu-small for the bench_train model (default: a small one that runs in seconds).
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(Path(__file__).resolve().parent)]
import train_arms as ta  # noqa: E402
from fastfreeze import FreezeConfig  # noqa: E402
from fastfreeze.cache import MemoryCache, batch_keys  # noqa: E402
from fastfreeze.cache_collator import BOUNDARY_KEY, CachedBoundaryCollator, gather_rows  # noqa: E402
from fastfreeze.runtime import apply_freeze  # noqa: E402

MICRO = ta.Preset("micro", 6, 256, 688, 4, 4, 4096, 128, 8, "float32", 3, 16, ta.Schedule(1, 1, 1), ta.Schedule(1, 1, 1))


@pytest.fixture(scope="module")
def setup():
    preset = ta.PRESETS.get(os.environ.get("BENCH_MICRO_PRESET", ""), MICRO)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    ctx = ta.BenchContext(preset, device, workdir="/tmp")
    model = ta.build_model(ctx)
    runtime = apply_freeze(model, FreezeConfig(num_frozen_layers=preset.k))
    collator = ta.PadCollator()
    batch = collator(ctx.examples[: preset.batch])
    inputs = {k: v.to(device) for k, v in batch.items()}
    return ctx, model, runtime.prefix, collator, batch, inputs


def _sync(ctx):
    if ctx.device.type == "cuda":
        torch.cuda.synchronize()


def test_prefix_forward(benchmark, setup):
    """Embedding + layers[:k] under no_grad at the training batch size (what a cache miss costs)."""
    ctx, model, prefix, _, _, inputs = setup
    fwd = {k: inputs[k] for k in ("input_ids", "attention_mask")}

    def run():
        out = prefix.compute_boundary(**fwd)
        _sync(ctx)
        return out

    boundary = benchmark(run)
    assert boundary.shape == (*inputs["input_ids"].shape, ctx.preset.hidden)
    assert not boundary.requires_grad


def test_cache_read_path(benchmark, setup):
    """Collator on a batch whose rows are all cached: key hashing, row lookup, scatter to [B, T, H]."""
    ctx, model, prefix, collator, batch, inputs = setup
    boundary = prefix.compute_boundary(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"]).cpu()
    cache = MemoryCache("micro-fingerprint")
    cache.put_many(batch_keys(batch["input_ids"], batch["attention_mask"]), gather_rows(boundary, batch["attention_mask"]))
    cached = CachedBoundaryCollator(collator, cache, ctx.preset.hidden, ctx.dtype, pin_memory=False)
    features = ctx.examples[: ctx.preset.batch]
    out = benchmark(cached, features)
    assert BOUNDARY_KEY in out
    real = batch["attention_mask"].bool()
    assert torch.equal(out[BOUNDARY_KEY][real], boundary[real])


def test_suffix_step(benchmark, setup):
    """One training step of the suffix with the boundary injected (the warm-cache step minus data and optimizer)."""
    ctx, model, prefix, _, _, inputs = setup
    boundary = prefix.compute_boundary(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"])
    model.train()
    calls = prefix.prefix_calls

    def run():
        with prefix.inject(boundary):
            loss = model(**inputs).loss
        loss.backward()
        model.zero_grad(set_to_none=True)
        _sync(ctx)
        return loss.detach()

    loss = benchmark(run)
    assert torch.isfinite(loss)
    assert prefix.prefix_calls == calls  # the prefix never ran: the step really was suffix-only
