"""Multi-GPU with a frozen prefix: FSDP wrap settings, DeepSpeed notes and helpers (HF Trainer launches, never ours).

DDP (torchrun / accelerate launch): nothing to configure. Frozen parameters are left out of DDP's
gradient buckets; the prefix has no collective of its own, so a rank whose batch is a cache hit
(prefix skipped) and a rank that runs the prefix stay in step (tested:
tests/integrations/test_distributed.py). A memory cache is per process and the sampler deals each
rank a different half of the data every epoch, so under DDP prefer
`FreezeConfig(cache="disk", cache_dir=<shared dir>)`: every rank writes its own shards, and at each
epoch end every rank flushes, waits for the others and re-reads the index, so a row any rank stored
in epoch e is a hit for every rank from epoch e+1 on. FastFreezeTrainer warns about a memory cache
in a multi-process run.

FSDP2: when the whole batch is cached on every rank, the prefix modules are not called (swapped for
stand-ins), so their shards are not all-gathered; the ranks agree on that with one 1-element
all_reduce per step (a rank that hits while another misses calls its prefix modules, so the
all-gathers still pair up). The cache fingerprint hashes the full tensors of DTensor shards: the
same on every rank and equal to the unsharded model's, so a cache built on one GPU serves a sharded
run. `fsdp_config()` wraps every decoder block and the embedding in their own units, so that:
- FSDP2 (default in transformers >= 5): parameters are sharded one by one; frozen ones never get a
  gradient buffer or optimizer state (tested on 2 CPU ranks: tests/integrations/test_fsdp.py);
- FSDP1 (`version=1`): each flat parameter must be all-frozen or all-trainable to avoid gradient
  memory for frozen weights; with the blocks and the embedding in their own units the root unit
  holds only the final norm and LM head. `use_orig_params=True` is still set, as HF/accelerate do,
  so a mixed unit works, at the price of a gradient buffer for that unit. Not tested, and a cache hit
  still all-gathers an FSDP1-wrapped prefix (the wrapper, not the module, sits in the parent).
Why FSDP1 is untested and how the FSDP2 test runs on CPU (Trainer enables FSDP only on accelerator
devices): docs/multi-process.md.
A head tied to the frozen embedding would share one weight across two units: pass
`FreezeConfig(untie_embeddings=True)` for FSDP.
Call `trainer.build_prefix_cache()` *before* `trainer.train()`: HF Trainer wraps the model when
training starts, so the precompute runs on the plain module on each rank, with no collective.

DeepSpeed (tested on 2 CPU ranks: tests/integrations/test_deepspeed.py; docs/multi-process.md): ZeRO-1/2
keep full parameters on every rank and build their optimizer from the trainable ones only, so the
prefix has no master copy, optimizer state or gradient partition. ZeRO-3 partitions parameters at load
(zero.Init): the freeze is decided from names and `ds_numel`, and the prefix trace, probe and cache
fingerprint run at train start under the engine, which gathers one module's weights at a time. A
ZeRO-3 prefix is gathered per leaf module, so a rank whose batch is cached runs its prefix anyway when
another rank misses (FreezeMixin). HF Trainer builds two optimizer groups (decay / no decay) and keeps
an empty one (e.g. LoRA trains no bias or norm), which older DeepSpeed versions reject:
FastFreezeTrainer's `create_optimizer` drops it (`fastfreeze.trainer.drop_empty_param_groups`).

Usage:
    args = TrainingArguments(..., fsdp="full_shard auto_wrap", fsdp_config=fsdp_config(model))
    trainer = FastFreezeTrainer(model=model, args=args, ..., freeze_config=FreezeConfig(num_frozen_layers=8))
"""
from __future__ import annotations

from torch import nn

from ..families import resolve

__all__ = ["fsdp_config", "fsdp_wrap_classes"]


def fsdp_wrap_classes(model: nn.Module) -> list[str]:
    """Class names FSDP should wrap as their own units: the decoder block and every embedding-side
    module with parameters (so frozen and trainable weights never share a unit).

    Usage:
        fsdp_wrap_classes(model)  # ['LlamaDecoderLayer', 'Embedding']
    """
    parts = resolve(model)
    names = [type(parts.layers[0]).__name__]
    for _, module in parts.embedding_side:
        if any(True for _ in module.parameters()):  # dropouts have nothing to shard
            name = type(module).__name__
            if name not in names:
                names.append(name)
    return names


def fsdp_config(model: nn.Module, version: int = 2, reshard_after_forward: bool = True,
                activation_checkpointing: bool = False) -> dict:
    """The `fsdp_config` dict for `TrainingArguments(fsdp="full_shard auto_wrap", fsdp_config=...)`
    that keeps the frozen prefix in units of its own (see the module docstring).

    Activation checkpointing: set it here (FSDP's own) or with TrainingArguments, not both.

    Usage:
        TrainingArguments(..., fsdp="full_shard auto_wrap", fsdp_config=fsdp_config(model))
    """
    if version not in (1, 2):
        raise ValueError(f"FSDP version must be 1 or 2, got {version!r}.")
    cfg = {"version": version, "transformer_layer_cls_to_wrap": fsdp_wrap_classes(model),
           "activation_checkpointing": activation_checkpointing}
    if version == 2:
        cfg["reshard_after_forward"] = reshard_after_forward
    else:
        cfg.update(use_orig_params=True, sync_module_states=True,
                   reshard_after_forward="full_shard" if reshard_after_forward else "shard_grad_op")
    return cfg
