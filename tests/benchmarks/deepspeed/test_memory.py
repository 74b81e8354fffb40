"""benchmarks/deepspeed/memory.py: storages are counted once, the table reads per stage against full fine-tuning.

The launches themselves (2 ranks per stage and arm) run only from `python -m benchmarks.deepspeed`;
their result is committed in benchmarks/results/deepspeed_memory_small.md.
"""
from __future__ import annotations

import torch

from benchmarks.deepspeed.memory import _config, _storages, table


def test_a_storage_shared_by_views_counts_once():
    flat = torch.zeros(10)
    views = [flat[:4], flat[4:], flat]
    assert _storages(views) == {flat.untyped_storage().data_ptr(): 40}


def test_configs_are_the_shipped_ones_at_each_stage():
    assert [_config(s)["zero_optimization"]["stage"] for s in (1, 2, 3)] == [1, 2, 3]
    assert "train_batch_size" not in _config(2)  # DeepSpeed refuses Trainer's value for "auto"


def test_table_compares_each_arm_with_full_fine_tuning_of_its_stage():
    def row(stage, arm, total):
        b = dict.fromkeys(("weights_frozen", "weights_trainable", "fp32_master", "adam_moments",
                           "gradients_and_buckets"), 0)
        return {"stage": stage, "arm": arm, "rank": 0, "bytes": {**b, "total": total}}
    lines = table([row(3, "full", 4e9), row(3, "plain", 1e9), {**row(3, "plain", 9e9), "rank": 1}])
    assert len(lines) == 4 and lines[-1].startswith("| ZeRO-3 | plain |") and lines[-1].endswith("| 0.250x |")
