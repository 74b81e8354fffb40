"""pytest-benchmark micro-benchmarks of the FastFreeze hot paths: prefix forward, cache read path, one suffix step.

Not collected by CI (`pytest tests/`); the repo's addopts disable benchmarks, so enable them:
    python -m pytest benchmarks/train/test_micro.py --benchmark-enable -q
    python -m pytest benchmarks/train/test_micro.py --benchmark-enable --benchmark-json out.json   # keep results
Set BENCH_MICRO_PRESET=cpu-small for the bench_train model (default: a small one that runs in seconds).
Only public fastfreeze names are used (the package layout may move modules).
"""
from __future__ import annotations

import os
import tempfile

import pytest
import torch

from benchmarks.train import arms as ta
from benchmarks.train import presets as tp
from fastfreeze import FastFreezeTrainer, FreezeConfig, apply_freeze

MICRO = tp.Preset(name="micro", layers=6, hidden=256, intermediate=688, heads=4, kv_heads=4, vocab=4096, seq=128,
                  batch=8, dtype="float32", k=3, examples=16, schedule=tp.Schedule(1, 1, 1),
                  sweep_schedule=tp.Schedule(1, 1, 1))


@pytest.fixture(scope="module")
def setup():
    preset = tp.PRESETS.get(os.environ.get("BENCH_MICRO_PRESET", ""), MICRO)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    ctx = tp.BenchContext(preset, device, workdir="/tmp")
    model = ta.build_model(ctx)
    runtime = apply_freeze(model, FreezeConfig(num_frozen_layers=preset.k))
    collator = ta.CountingCollator()
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
    """The trainer's collator on a batch whose rows are all cached: key hashing, row lookup, scatter to [B, T, H]."""
    ctx, model, prefix, collator, batch, inputs = setup
    boundary = prefix.compute_boundary(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"]).cpu()
    features = ctx.examples[: ctx.preset.batch]
    with tempfile.TemporaryDirectory() as out_dir:
        args = ta.training_args(ctx, out_dir, ckpt=False)
        fresh = ta.build_model(ctx)  # same seed: the same frozen weights, hence the same boundaries
        trainer = FastFreezeTrainer(model=fresh, args=args, train_dataset=ta._dataset(features),
                                    data_collator=ta.CountingCollator(),
                                    freeze_config=FreezeConfig(num_frozen_layers=ctx.preset.k, cache="memory"))
        trainer.build_prefix_cache()
        out = benchmark(trainer.data_collator, features)
    extra = [key for key in out if key not in batch]
    assert len(extra) == 1, f"expected one boundary tensor added by the cached collator, got {extra}"
    real = batch["attention_mask"].bool()
    assert torch.allclose(out[extra[0]][real].float(), boundary[real].float(), rtol=1e-5, atol=1e-6)


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
