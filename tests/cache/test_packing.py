"""Tests of the packed-document check: passes where attention keeps documents apart, refuses with the reason where not."""
import torch

from fastfreeze import FreezeConfig, apply_freeze
from fastfreeze.cache.packing import packed_documents_refusal
from tests._helpers import make_model


def test_packed_check_passes_on_eager_and_sdpa_and_refuses_attention_that_crosses_documents():
    for attn in ("eager", "sdpa"):
        prefix = apply_freeze(make_model("llama", attn=attn), FreezeConfig(num_frozen_layers=2)).prefix
        assert packed_documents_refusal(prefix) is None, attn
    calls, tokens = prefix.prefix_calls, prefix.prefix_tokens
    real = prefix.compute_boundary

    def crossing(**inputs):  # what an attention kernel that ignores position restarts computes
        return real(**inputs, attention_mask=torch.ones_like(inputs["input_ids"]))

    prefix.compute_boundary = crossing
    reason = packed_documents_refusal(prefix)
    assert reason is not None and "see each other" in reason and "'sdpa'" in reason
    assert (prefix.prefix_calls, prefix.prefix_tokens) == (calls, tokens)  # the check's runs are not counted


def test_packed_check_is_refused_on_the_meta_device():
    prefix = apply_freeze(make_model("llama"), FreezeConfig(num_frozen_layers=2)).prefix
    prefix.offload("meta")
    assert "meta device" in packed_documents_refusal(prefix)


def test_a_prefix_that_cannot_run_on_ids_and_positions_is_refused_not_fatal():
    prefix = apply_freeze(make_model("llama"), FreezeConfig(num_frozen_layers=2)).prefix

    def broken(**inputs):
        raise RuntimeError("needs pixel_values")

    prefix.compute_boundary = broken
    assert "could not run the prefix (RuntimeError: needs pixel_values)" in packed_documents_refusal(prefix)


def test_install_time_runs_leave_the_prefix_counters_at_zero(tmp_path):
    """The probe's and the packed-document check's prefix runs are not the run's."""
    from tests.parity.harness import FFTrainer, training_args
    from datasets import Dataset
    from tests._helpers import make_rows, pad_collator

    trainer = FFTrainer(model=make_model("llama"), args=training_args(str(tmp_path), steps=1),
                        train_dataset=Dataset.from_list(make_rows(4)), data_collator=pad_collator(),
                        freeze_config=FreezeConfig(num_frozen_layers=2, cache="memory"))
    assert trainer.prefix_cache.split_documents
    assert (trainer.prefix.prefix_calls, trainer.prefix.prefix_tokens) == (0, 0)
