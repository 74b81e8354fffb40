"""The activation cache changes nothing but speed: same losses, same parameters, same eval loss."""
from __future__ import annotations


import pytest
import torch

from fastfreeze import FreezeConfig
from tests._helpers import assert_losses_close, make_model, pad_collator
from tests.parity.harness import max_rel_diff, run_arm

RTOL = 1e-6  # fp32; cached rows are the same bits the prefix produced in an earlier batch layout


def _cfg(kind, tmp_path, **kw):
    return FreezeConfig(num_frozen_layers=2, cache=kind, cache_dir=str(tmp_path / "cache") if kind == "disk" else None, **kw)


@pytest.mark.parametrize("family", ["llama", "gpt_neox"])
def test_two_epochs_same_with_memory_disk_and_no_cache(family, tmp_path):
    # 32 rows, batch 4, grad accum 2 -> 4 optimizer steps per epoch; 8 steps = 2 epochs.
    # Batches are padded to one fixed width: a row's prefix output computed inside batches of
    # different widths differs in the last bits (BLAS blocking), and Adam turns last-bit noise in
    # parameters whose true gradient is zero (GPT-NeoX's key bias) into lr-sized differences.
    runs = {}
    for kind in (None, "memory", "disk"):
        runs[kind] = run_arm(family, 2, "ff", str(tmp_path / f"ff-{kind}"), steps=8, pad_to=12,
                             freeze_config=_cfg(kind, tmp_path))
    base = runs[None]
    for kind in ("memory", "disk"):
        run = runs[kind]
        assert len(run["losses"]) == len(base["losses"]) == 16
        assert_losses_close(run["losses"], base["losses"], rtol=RTOL)  # cached rows: the same bits (RTOL above)
        for name, p in base["params"].items():
            assert max_rel_diff(run["params"][name], p) <= RTOL, name
        assert abs(run["eval_loss"] - base["eval_loss"]) <= RTOL * abs(base["eval_loss"])
        summary = run["trainer"].cache_summary()
        # epoch 2 (and the eval, whose rows differ) must be served by the cache: 32 train rows hit again.
        assert summary.entries == 32 + 8 and summary.hits >= 32, summary
        # The prefix ran only for epoch 1 (8 batches) + eval's first pass (2 batches).
        assert run["trainer"].prefix.prefix_calls == 8 + 2


def test_precompute_then_train_never_runs_prefix(tmp_path):
    from tests.parity.harness import FFTrainer, training_args
    from datasets import Dataset
    from tests._helpers import make_rows

    model = make_model("llama")
    trainer = FFTrainer(model=model, args=training_args(str(tmp_path / "o"), steps=8),
                        train_dataset=Dataset.from_list(make_rows(32)), eval_dataset=Dataset.from_list(make_rows(8, seed=7)),
                        data_collator=pad_collator(), freeze_config=_cfg("memory", tmp_path))
    trainer.recorded = []
    stats = trainer.build_prefix_cache()
    assert stats["examples"] == 40 and stats["tokens"] > 0
    calls = trainer.prefix.prefix_calls
    trainer.train()
    trainer.evaluate()
    assert trainer.prefix.prefix_calls == calls, "a fully cached run must never run the prefix"
    ref = run_arm("llama", 2, "ref", str(tmp_path / "ref"), steps=8)
    # against the plain recipe: fp32, same ops, the boundary from a different batch layout (tests/parity's 1e-5)
    assert_losses_close(trainer.recorded, ref["losses"], rtol=1e-5)


def test_second_trainer_reuses_disk_cache(tmp_path):
    first = run_arm("llama", 2, "ff", str(tmp_path / "a"), steps=4, freeze_config=_cfg("disk", tmp_path))
    assert first["trainer"].cache_summary().entries == 40
    second = run_arm("llama", 2, "ff", str(tmp_path / "b"), steps=4, freeze_config=_cfg("disk", tmp_path))
    summary = second["trainer"].cache_summary()
    assert summary.hits >= 16 + 8 and second["trainer"].prefix.prefix_calls == 0
    assert_losses_close(first["losses"], second["losses"], rtol=RTOL)  # 2nd run reads the 1st's rows (RTOL above)


def test_injected_boundary_needs_no_prefix_weights():
    """With a cached boundary the prefix weights are never touched, so they can leave the accelerator:
    moved to the meta device (no data at all), the loss is unchanged."""
    from fastfreeze import apply_freeze

    model = make_model("llama")
    rt = apply_freeze(model, FreezeConfig(num_frozen_layers=2))
    batch = {"input_ids": torch.randint(1, 90, (2, 9)), "attention_mask": torch.ones(2, 9, dtype=torch.long)}
    batch["labels"] = batch["input_ids"]
    boundary = rt.prefix.compute_boundary(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
    loss = model(**batch).loss
    rt.prefix.offload("meta")
    assert rt.prefix.offloaded and model.model.embed_tokens.weight.is_meta
    with rt.prefix.inject(boundary):
        loss_cached = model(**batch).loss
    assert torch.equal(loss, loss_cached)


@pytest.mark.parametrize("kind", ["memory", "disk"])
def test_cap_stops_adding_and_changes_nothing_else(kind, tmp_path, caplog):
    """cache_max_bytes: past it the cache stops adding entries (nothing is evicted), says so once, and
    training is unchanged; the cache's size is logged once, at the end of the first epoch."""
    import logging
    import os
    import warnings

    from fastfreeze.cache import CacheWarning
    from tests._helpers import make_rows

    hidden = make_model("llama").config.hidden_size
    full = sum(len(r["input_ids"]) for r in make_rows(32)) * hidden * 4  # fp32 rows of the 32 training rows
    cap = full // 2
    base = run_arm("llama", 2, "ff", str(tmp_path / "base"), steps=8, pad_to=12, evaluate=False)
    caplog.set_level(logging.INFO, logger="fastfreeze")
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        run = run_arm("llama", 2, "ff", str(tmp_path / "capped"), steps=8, pad_to=12, evaluate=False,
                      freeze_config=_cfg(kind, tmp_path, cache_max_bytes=cap))
    summary = run["trainer"].cache_summary()
    assert 0 < summary.bytes <= cap and 0 < summary.entries < 32 and summary.refused > 0, summary
    if kind == "disk":
        on_disk = sum(os.path.getsize(os.path.join(summary.path, f)) for f in os.listdir(summary.path) if f.endswith(".bin"))
        assert on_disk == summary.bytes
    capped = [w for w in seen if issubclass(w.category, CacheWarning) and "stops adding" in str(w.message)]
    assert len(capped) == 1
    # Epoch 2: the cached rows hit, the rest ran the prefix again (a row past the cap is never stored).
    assert summary.hits > 0 and run["trainer"].prefix.prefix_calls > 4
    assert len(run["losses"]) == len(base["losses"]) == 16  # one per micro-batch: 8 steps x grad accum 2
    for a, b in zip(run["losses"], base["losses"]):
        assert abs(a - b) <= RTOL * abs(b)
    for name, p in base["params"].items():
        assert max_rel_diff(run["params"][name], p) <= RTOL, name
    sized = [r for r in caplog.records if "after the first epoch the prefix cache holds" in r.getMessage()]
    assert len(sized) == 1 and f"{summary.bytes:,} bytes" in sized[0].getMessage()


def test_half_cached_padded_batches_run_the_prefix_on_their_missing_rows_only(tmp_path):
    """Every other training row precomputed: the prefix then runs on exactly the other rows (each at
    the batch width, 12), whatever batch they land in; losses and weights equal the no-cache run's."""
    from datasets import Dataset

    from tests._helpers import make_rows
    from tests.parity.harness import FFTrainer, training_args

    base = run_arm("llama", 2, "ff", str(tmp_path / "base"), steps=4, pad_to=12, evaluate=False)
    rows = make_rows(32)
    trainer = FFTrainer(model=make_model("llama"), args=training_args(str(tmp_path / "o"), steps=4),
                        train_dataset=Dataset.from_list(rows), data_collator=pad_collator(pad_to=12),
                        freeze_config=_cfg("memory", tmp_path))
    trainer.recorded = []
    trainer.build_prefix_cache(Dataset.from_list(rows[::2]), batch_size=4)
    tokens = trainer.prefix.prefix_tokens
    trainer.train()  # 4 steps x grad accum 2 x batch 4 = one epoch of the 32 rows
    assert trainer.prefix.prefix_tokens - tokens == 16 * 12
    summary = trainer.cache_summary()
    assert (summary.hits, summary.entries) == (16, 32)
    assert len(trainer.recorded) == len(base["losses"]) == 8  # one per micro-batch: 4 steps x grad accum 2
    for a, b in zip(trainer.recorded, base["losses"]):
        assert abs(a - b) <= RTOL * abs(b)
    for name, p in base["params"].items():
        assert max_rel_diff(dict(trainer.model.named_parameters())[name].detach(), p) <= RTOL, name
