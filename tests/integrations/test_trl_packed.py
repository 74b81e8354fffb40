"""Packed and padding-free SFT with the cache: per-document entries, 100% epoch-2 hits, partial hits, same weights."""
from __future__ import annotations

import pytest

pytest.importorskip("trl")

from transformers import TrainerCallback  # noqa: E402

from fastfreeze import FreezeConfig, FreezeConfigError  # noqa: E402
from tests.integrations.test_trl import K, assert_parity, run_sft, sft_dataset  # noqa: E402

# Shuffled, 2 epochs, per-device batch 4: epoch 2 packs other documents together than epoch 1 did.
PACKED = {"packing": dict(packing=True, max_length=16), "padding_free": dict(padding_free=True, max_length=None)}
EPOCHS = dict(max_steps=-1, num_train_epochs=2, per_device_train_batch_size=4, gradient_accumulation_steps=1)


class EpochCounters(TrainerCallback):
    """Cache hits/misses and prefix runs/tokens at each epoch start (and at the end)."""

    def __init__(self):
        self.trainer, self.marks = None, []

    def _mark(self):
        s = self.trainer.cache_summary()
        p = self.trainer.prefix
        self.marks.append({"hits": s.hits, "misses": s.misses, "calls": p.prefix_calls, "tokens": p.prefix_tokens})

    def on_epoch_begin(self, args, state, control, **kw):
        self._mark()

    def on_train_end(self, args, state, control, **kw):
        self._mark()


def _cached(kind, tmp_path):
    return FreezeConfig(num_frozen_layers=K, cache=kind, cache_dir=str(tmp_path / "cache") if kind == "disk" else None)


def _run(mode, out, freeze_config=None, counters=None, **extra):
    kw = {**PACKED[mode], **EPOCHS, **extra}
    if counters is None:
        return run_sft("ff", out, freeze_config=freeze_config, **kw)
    # run_sft builds and trains in one call: hand the callback in through a trainer subclass hook.
    from tests.integrations import test_trl

    class Counted(test_trl.FFSFT):
        def __init__(self, *a, **k):
            super().__init__(*a, **k)
            counters.trainer = self
            self.add_callback(counters)

    old, test_trl.FFSFT = test_trl.FFSFT, Counted
    try:
        return run_sft("ff", out, freeze_config=freeze_config, **kw)
    finally:
        test_trl.FFSFT = old


@pytest.mark.parametrize("kind", ["memory", "disk"])
@pytest.mark.parametrize("mode", ["packing", "padding_free"])
def test_packed_epoch2_all_hits_same_weights_as_no_cache(mode, kind, tmp_path):
    plain = _run(mode, str(tmp_path / "plain"))
    ref = run_sft("ref", str(tmp_path / "ref"), **PACKED[mode], **EPOCHS)
    counters = EpochCounters()
    ff = _run(mode, str(tmp_path / "ff"), freeze_config=_cached(kind, tmp_path), counters=counters)
    trainer = ff["trainer"]
    assert trainer.prefix_cache.split_documents, trainer.prefix_cache.packed_refusal
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(4)])
    assert batch["input_ids"].shape[0] == 1 and "attention_mask" not in batch  # flattened, several documents
    start, epoch2, end = counters.marks
    docs = epoch2["misses"] - start["misses"]
    # Entries are documents: 24 rows, packed into fewer sequences under packing=True.
    assert docs == 24 and (mode != "packing" or len(trainer.train_dataset) < docs)
    # Epoch 2: every document a hit (100%), the prefix never ran.
    assert end["misses"] == epoch2["misses"] and end["hits"] - epoch2["hits"] == docs
    assert end["calls"] == epoch2["calls"] and trainer.cache_summary().entries == docs
    assert_parity(ff, plain)
    assert_parity(ff, ref)


def test_half_cached_batches_run_the_prefix_for_the_missing_half_only(tmp_path):
    """Every other document precomputed: each batch of 4 is partly cached; the prefix runs on
    exactly the tokens of the documents that were not, and the weights equal the no-cache run's."""
    mode = "padding_free"
    plain = _run(mode, str(tmp_path / "plain"), num_train_epochs=1)
    counters = EpochCounters()
    from tests.integrations import test_trl

    class HalfBuilt(test_trl.FFSFT):
        def train(self, *a, **k):
            half = self.train_dataset.select(range(0, len(self.train_dataset), 2))
            self.build_prefix_cache(half, batch_size=4)
            self.cache_before = self.cache_summary().entries
            self.partial = []  # (missing tokens, batch tokens) of every partly cached batch
            fill = self.prefix_cache.fill_missing

            def counted(inputs, boundary, missing):
                self.partial.append((missing.tokens, inputs["input_ids"].numel()))
                return fill(inputs, boundary, missing)

            self.prefix_cache.fill_missing = counted
            return super().train(*a, **k)

    old, test_trl.FFSFT = test_trl.FFSFT, HalfBuilt
    try:
        ff = _run(mode, str(tmp_path / "ff"), freeze_config=_cached("memory", tmp_path), counters=counters,
                  num_train_epochs=1)
    finally:
        test_trl.FFSFT = old
    trainer = ff["trainer"]
    ds = trainer.train_dataset
    missing_tokens = sum(len(ds[i]["input_ids"]) for i in range(1, len(ds), 2))
    start, end = counters.marks
    assert trainer.cache_before == (len(ds) + 1) // 2
    assert end["tokens"] - start["tokens"] == missing_tokens  # only the missing half went through the prefix
    assert end["hits"] - start["hits"] == (len(ds) + 1) // 2 and end["misses"] - start["misses"] == len(ds) // 2
    # Most shuffled batches of 4 are partly cached: each ran the prefix once, on its missing documents only.
    assert len(trainer.partial) >= 3 and all(0 < m < n for m, n in trainer.partial), trainer.partial
    whole_misses = end["calls"] - start["calls"] - len(trainer.partial)
    assert whole_misses >= 0 and sum(m for m, _ in trainer.partial) <= missing_tokens
    assert_parity(ff, plain)


def test_build_prefix_cache_with_packed_batches_serves_training(tmp_path):
    """Per-document keys: a precompute in batches of 4 flattened rows matches any training batch."""
    from tests.integrations import test_trl

    class Built(test_trl.FFSFT):
        def train(self, *a, **k):
            self.build_prefix_cache()
            self.calls_after_build = self.prefix.prefix_calls
            return super().train(*a, **k)

    old, test_trl.FFSFT = test_trl.FFSFT, Built
    try:
        ff = _run("packing", str(tmp_path / "ff"), freeze_config=_cached("memory", tmp_path))
    finally:
        test_trl.FFSFT = old
    trainer = ff["trainer"]
    assert trainer.prefix.prefix_calls == trainer.calls_after_build  # training never ran the prefix
    assert trainer.cache_summary().misses == 0


def test_refused_packed_check_keys_whole_rows_and_refuses_the_precompute(tmp_path, monkeypatch):
    import fastfreeze.cache.wiring as rt
    from fastfreeze.integrations.trl import FastFreezeSFTTrainer
    from tests.integrations.test_trl import _tokenizer, sft_args
    from tests._helpers import make_model

    monkeypatch.setattr(rt, "packed_documents_refusal", lambda prefix: "attention crosses documents (test)")
    trainer = FastFreezeSFTTrainer(model=make_model("llama"), processing_class=_tokenizer(), train_dataset=sft_dataset(),
                                   args=sft_args(str(tmp_path), padding_free=True, max_length=None),
                                   freeze_config=_cached("memory", tmp_path))
    assert not trainer.data_collator.split_documents
    with pytest.raises(FreezeConfigError, match="attention crosses documents"):
        trainer.build_prefix_cache()
