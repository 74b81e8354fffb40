"""One rank of the DDP test: `torchrun --nproc_per_node 2 -m tests.integrations.ddp_worker OUT_DIR SCENARIO` (gloo, CPU).

Runs FastFreezeTrainer in one cache set-up (one scenario per launch: a process group that outlives
one trainer once aborted in C++ teardown, ~1 launch in 25) and writes the final parameters (rank 0)
and each rank's prefix/cache counters as JSON. The process group is torn down in order: a barrier,
then `destroy_process_group` on both ranks, so no rank exits while the other still has gloo work.
The single-process reference is computed by the test itself (tests/integrations/test_distributed.py).
"""
from __future__ import annotations

import gc
import json
import os
import sys

import torch

# What tests/conftest.py sets up for the pytest process (this one runs under torchrun, without it).
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")
torch.set_num_threads(1)

import torch.distributed as dist  # noqa: E402
from datasets import Dataset  # noqa: E402

from fastfreeze import FastFreezeTrainer, FreezeConfig  # noqa: E402
from tests._helpers import make_model, make_rows, pad_collator  # noqa: E402
from tests.parity.harness import training_args  # noqa: E402

K = 2
ROWS, STEPS, PAD_TO = 32, 16, 12  # 2 epochs of 8 global batches of 4 (2 ranks x 2)
SCENARIOS = ("nocache", "memory", "memory_rank0_precomputed", "disk")


def ddp_args(out: str, per_device: int):
    # Same optimizer recipe as the parity harness; one micro-batch per step so the only difference
    # between 2 x 2 and 4 x 1 is who computes which rows.
    # ddp_backend only under a launcher: accelerate would otherwise expect a process group.
    distributed = int(os.environ.get("WORLD_SIZE", "1")) > 1
    return training_args(out, steps=STEPS, grad_accum=1, per_device_train_batch_size=per_device,
                         ddp_backend="gloo" if distributed else None, logging_steps=4,
                         ddp_find_unused_parameters=False)


def make_trainer(out: str, freeze_config: FreezeConfig, per_device: int) -> FastFreezeTrainer:
    return FastFreezeTrainer(model=make_model("llama"), args=ddp_args(out, per_device),
                             train_dataset=Dataset.from_list(make_rows(ROWS)),
                             data_collator=pad_collator(pad_to=PAD_TO), freeze_config=freeze_config)


def freeze_config(scenario: str, root: str) -> FreezeConfig:
    if scenario == "nocache":
        return FreezeConfig(num_frozen_layers=K)
    if scenario == "disk":
        return FreezeConfig(num_frozen_layers=K, cache="disk", cache_dir=os.path.join(root, "disk-cache"))
    return FreezeConfig(num_frozen_layers=K, cache="memory")


def run_scenario(scenario: str, root: str, rank: int) -> None:
    trainer = make_trainer(os.path.join(root, f"{scenario}-out"), freeze_config(scenario, root), per_device=2)
    calls_before = 0
    if scenario == "memory_rank0_precomputed" and rank == 0:
        # Uneven on purpose: rank 0 never runs its prefix during training, rank 1 runs it every
        # batch of epoch 1. Nothing collective may depend on the prefix running.
        trainer.build_prefix_cache()
        calls_before = trainer.prefix.prefix_calls
    trainer.train()
    summary = trainer.cache_summary()
    stats = {"rank": rank, "pid": os.getpid(), "prefix_calls": trainer.prefix.prefix_calls,
             "kernel_set": trainer.freeze_runtime.kernel_set,
             "losses": [row["loss"] for row in trainer.state.log_history if "loss" in row],
             "prefix_calls_before_train": calls_before, "world_size": trainer.args.world_size,
             "cache": None if summary is None else {"hits": summary.hits, "misses": summary.misses,
                                                    "entries": summary.entries}}
    with open(os.path.join(root, f"{scenario}.rank{rank}.json"), "w") as f:
        json.dump(stats, f)
    if rank == 0:
        params = {n: p.detach().cpu() for n, p in trainer.model.named_parameters()}
        torch.save(params, os.path.join(root, f"{scenario}.pt.tmp"))
        os.replace(os.path.join(root, f"{scenario}.pt.tmp"), os.path.join(root, f"{scenario}.pt"))
    # Tear the DDP wrapper down on both ranks at once, before the process group goes: left to the
    # garbage collector, a DDP reducer can be destroyed while the other rank sits in a collective.
    trainer.accelerator.free_memory()
    del trainer
    gc.collect()


def main() -> None:
    root, scenario = sys.argv[1], sys.argv[2]
    if scenario not in SCENARIOS:
        raise SystemExit(f"unknown scenario {scenario!r}; one of {SCENARIOS}")
    torch.set_num_threads(1)
    rank = int(os.environ["RANK"])
    run_scenario(scenario, root, rank)
    if dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
