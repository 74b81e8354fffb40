"""One rank of the FSDP2 test: `torchrun --nproc_per_node 2 -m tests.integrations.fsdp_worker OUT_DIR SCENARIO` (gloo, CPU).

accelerate turns FSDP on only for accelerator devices (AcceleratorState sets DistributedType.FSDP
inside its MULTI_GPU/NPU/XPU/... branch; multi-process CPU is MULTI_CPU, which Trainer then wraps in
DDP, and DDP refuses a model that is already `fully_shard`-ed). So on CPU the worker builds the
Trainer a GPU user would build (`TrainingArguments(fsdp=..., fsdp_config=fsdp_config(model))`) and
then marks accelerate's state FSDP, exactly what the MULTI_GPU branch does: from there on,
accelerate's own FSDP2 preparation (`fully_shard` per wrapped class) and Trainer's FSDP save path run
as on GPUs. That forcing and the all-gather counting touch private torch / accelerate names, all of
them through tests/integrations/_fsdp_cpu.py, which checks them first. Writes each rank's counters
as JSON and rank 0's final weights.
"""
from __future__ import annotations

import json
import os
import sys

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")
torch.set_num_threads(1)

import torch.distributed as dist  # noqa: E402
from datasets import Dataset  # noqa: E402
from torch.distributed.tensor import DTensor  # noqa: E402

from transformers import TrainerCallback  # noqa: E402

from fastfreeze import FastFreezeTrainer, FreezeConfig  # noqa: E402
from fastfreeze.cache.wiring import compute_fingerprint  # noqa: E402
from fastfreeze.integrations.distributed import fsdp_config  # noqa: E402
from tests._helpers import make_model, make_rows, pad_collator  # noqa: E402
from tests.integrations import _fsdp_cpu  # noqa: E402
from tests.parity.harness import training_args  # noqa: E402

K, ROWS, STEPS, PAD_TO = 2, 16, 8, 12  # 2 epochs of 4 global batches of 4 (2 ranks x 2)
# meta*: FSDP RAM-efficient loading; rank 1 builds its model with every parameter on `meta`, as
# transformers' from_pretrained does on ranks > 0 (non-persistent buffers stay real), and accelerate
# fills it from rank 0 when train() starts. Last: TrainingArguments sets an FSDP environment variable.
SCENARIOS = ("nocache", "memory", "memory_rank0", "disk", "memory_half", "meta", "meta_disk", "meta_triton")


class ForcedFSDPTrainer(FastFreezeTrainer):
    """FastFreezeTrainer whose accelerate state is FSDP on CPU (see the module docstring)."""

    def create_accelerator_and_postprocess(self):
        super().create_accelerator_and_postprocess()
        _fsdp_cpu.force_fsdp(self, plugin=True)


def parameters_to_meta(model: torch.nn.Module) -> torch.nn.Module:
    """Every parameter (tied ones stay tied) replaced by a `meta` tensor of its shape and dtype."""
    metas: dict[int, torch.nn.Parameter] = {}
    for module in model.modules():
        for name, p in list(module.named_parameters(recurse=False)):
            if id(p) not in metas:
                metas[id(p)] = torch.nn.Parameter(p.detach().to("meta"), requires_grad=p.requires_grad)
            setattr(module, name, metas[id(p)])
    return model


def make_trainer(out: str, cfg: FreezeConfig, per_device: int, cls=ForcedFSDPTrainer, meta: bool = False):
    model = make_model("llama")
    distributed = int(os.environ.get("WORLD_SIZE", "1")) > 1
    fsdp = dict(fsdp="full_shard auto_wrap", fsdp_config=fsdp_config(model)) if distributed else {}
    if meta:
        fsdp["fsdp_config"]["cpu_ram_efficient_loading"] = True
        if int(os.environ["RANK"]) > 0:
            model = parameters_to_meta(model)
    args = training_args(out, steps=STEPS, grad_accum=1, per_device_train_batch_size=per_device,
                         ddp_backend="gloo" if distributed else None, logging_steps=4, **fsdp)
    return cls(model=model, args=args, train_dataset=Dataset.from_list(make_rows(ROWS)),
               data_collator=pad_collator(pad_to=PAD_TO), freeze_config=cfg)


class GatherCounter(TrainerCallback):
    """Per optimizer step: FSDP2 all-gathers that really ran, attributed to the unit being unsharded and
    split into prefix units and the rest (through _fsdp_cpu.watch_all_gathers). Test instrumentation only."""

    def __init__(self, prefix_modules):
        self.prefix_ids, self.now = {id(m) for m in prefix_modules}, {"prefix": 0, "other": 0}
        self.steps: list = []
        self.stop = _fsdp_cpu.watch_all_gathers(self.count)  # each scenario's counter, one at a time

    def count(self, modules: tuple) -> None:
        self.now["prefix" if any(id(m) in self.prefix_ids for m in modules) else "other"] += 1

    def on_step_end(self, args, state, control, **kwargs):
        self.steps.append(dict(self.now))
        self.now.update(prefix=0, other=0)


def _optimizer_bytes(trainer) -> dict:
    """This rank's optimizer-state bytes, split by whether the parameter is frozen, and the local
    (shard) element count of the trainable parameters they belong to."""
    names = {id(p): n for n, p in trainer.model.named_parameters()}
    frozen = {id(p) for p in trainer.model.parameters() if not p.requires_grad}
    out = {"frozen_state_bytes": 0, "moment_bytes": 0, "trainable_local_numel": 0, "params_with_state": []}
    for p, st in trainer.optimizer.state.items():
        out["params_with_state"].append(names.get(id(p), "?"))
        for key, v in st.items():
            local = v.to_local() if isinstance(v, DTensor) else v
            nbytes = local.numel() * local.element_size()
            if id(p) in frozen:
                out["frozen_state_bytes"] += nbytes
            elif key in ("exp_avg", "exp_avg_sq"):
                out["moment_bytes"] += nbytes
    for p in trainer.model.parameters():
        if p.requires_grad:
            out["trainable_local_numel"] += (p.to_local() if isinstance(p, DTensor) else p).numel()
    return out


def run(root: str, scenario: str, rank: int) -> dict:
    cache = {"nocache": None, "memory": "memory", "memory_rank0": "memory", "disk": "disk", "memory_half": "memory",
             "meta": None, "meta_disk": "disk", "meta_triton": None}[scenario]
    # meta_triton: the kernels are installed on the sharded model at train start (interpreted on CPU).
    cfg = FreezeConfig(num_frozen_layers=K, cache=cache, kernels="triton" if scenario == "meta_triton" else "auto",
                       cache_dir=os.path.join(root, f"{scenario}-cache") if cache == "disk" else None)
    meta = scenario.startswith("meta")
    t = make_trainer(os.path.join(root, scenario), cfg, per_device=2, meta=meta)
    # Before train(): a meta-loaded run has only frozen (requires_grad) so far; the rest waits for train start.
    before = {"completed_at_init": t.freeze_runtime.completed, "prefix_at_init": t.prefix is not None,
              "meta_at_init": any(p.is_meta for p in t.model.parameters())}
    if scenario == "memory" or (scenario == "memory_rank0" and rank == 0):
        # "memory": every row on every rank, so each step is a hit on both ranks. "memory_rank0":
        # rank 0 hits every step while rank 1 misses, so rank 0 must still join the prefix all-gathers.
        t.build_prefix_cache()
    if scenario == "memory_half":
        # Every other row cached on both ranks: batches are partly cached, which under a sharded prefix
        # run as whole misses (computing only the missing rows would be an unpaired prefix run).
        t.build_prefix_cache(t.train_dataset.select(range(0, ROWS, 2)))
    calls_before = t.prefix.prefix_calls if t.prefix is not None else 0
    parts = t.freeze_runtime.parts
    counter = GatherCounter([m for _, m in parts.embedding_side] + [parts.layers[i] for i in range(K)])
    t.add_callback(counter)
    t.train()
    counter.stop()
    params = dict(t.model.named_parameters())
    summary = t.cache_summary()
    stats = {"rank": rank, "is_fsdp_enabled": t.is_fsdp_enabled, "world_size": t.args.world_size,
             "distributed_type": str(t.accelerator.state.distributed_type),
             "dtensor": sorted(n for n, p in params.items() if isinstance(p, DTensor)), "params": sorted(params),
             "frozen_with_grad": sorted(n for n, p in params.items() if not p.requires_grad and p.grad is not None),
             "gathers": counter.steps, "prefix_calls": t.prefix.prefix_calls - calls_before,
             "cache": None if summary is None else {"hits": summary.hits, "misses": summary.misses,
                                                    "entries": summary.entries},
             "probe": t.freeze_runtime.probe is not None, "kernel_set": t.freeze_report.kernel_set,
             "device": t.freeze_report.device, **before, **_optimizer_bytes(t)}
    if cache:
        stats["fingerprint_at_open"] = t.prefix_cache.cache.fingerprint
        stats["fingerprint_sharded"] = compute_fingerprint(t.model, t.prefix, cfg, t.freeze_runtime.kernel_set)
    full = {n: (p.full_tensor() if isinstance(p, DTensor) else p).detach().cpu() for n, p in params.items()}
    if scenario == "nocache":
        # Again before saving: on CPU accelerate sets its shared state back to MULTI_CPU during train(),
        # and Trainer would then save each rank's DTensor shards instead of the full state dict.
        _fsdp_cpu.force_fsdp(t)
        t.save_model(os.path.join(root, "saved"))  # FULL_STATE_DICT (fsdp_config's default): a plain checkpoint
    if rank == 0:
        torch.save(full, os.path.join(root, f"{scenario}.pt"))
    return stats


def main() -> None:
    _fsdp_cpu.check()  # every private name the forcing and counting use, named with the versions if moved
    root, scenarios = sys.argv[1], sys.argv[2].split(",")
    rank = int(os.environ["RANK"])
    for scenario in scenarios:
        stats = run(root, scenario, rank)
        with open(os.path.join(root, f"{scenario}.rank{rank}.json"), "w") as f:
            json.dump(stats, f)
        dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
