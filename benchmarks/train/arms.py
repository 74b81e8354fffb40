"""The training arms of bench_train: the model, the data collator, and one function per way of freezing.

Every arm is a function ``arm(spec, ctx, hook) -> dict`` that builds its own model (same seed, so
the same weights in every arm), trains ``ctx.max_steps`` optimizer steps and calls
``hook.step_end()`` after each one. The hook records the wall time between consecutive step ends
(data loading, collator, forward, backward, clipping, optimizer: everything the user waits for) and,
under `RoundRobin`, hands the CPU/GPU to the next arm after each window, so machine noise hits all
arms alike.

Usage:
    ctx = BenchContext(PRESETS["toy"], device=torch.device("cpu"), workdir="/tmp/b")   # benchmarks.train.presets
    specs = [ArmSpec(kind="naive", k=2, ckpt=False), ArmSpec(kind="ff-warm", k=2, ckpt=False)]
    results = RoundRobin(ctx.schedule).run(specs, ctx, run_arm)                         # benchmarks.train.roundrobin
"""
from __future__ import annotations

import inspect
import time

import torch
from torch import nn

from benchmarks.train.floor import minimal_loop, suffix_model
from benchmarks.train.presets import ArmSpec, BenchContext, Preset
from benchmarks.train.roundrobin import StepHook, make_step_callback
from fastfreeze._hf_compat import checkpointing_training_kwargs
from fastfreeze.data import PaddingCollator

ARM_KINDS = ("full", "naive", "liger", "ff", "ff-warm", "ff-cold", "floor", "floor-loop")
ARM_HELP = {
    "full": "full fine-tune (nothing frozen), plain Trainer",
    "naive": "seed snippet: requires_grad=False on embed + layers[:k], plain Trainer",
    "liger": "naive + Liger-Kernel patching (apply_liger_kernel_to_llama)",
    "ff": "FastFreezeTrainer, no cache",
    "ff-warm": "FastFreezeTrainer, memory cache built first (build_prefix_cache), then trained",
    "ff-cold": "FastFreezeTrainer, memory cache filled lazily during the first epoch",
    "floor": "suffix-only floor: Trainer on layers[k:] + norm + head fed precomputed boundaries",
    "floor-loop": "suffix-only floor in a minimal torch loop (no Trainer): isolates Trainer overhead",
}


# ------------------------------------------------------------------------------------------ model, data
def model_config(p: Preset):
    from transformers import LlamaConfig

    return LlamaConfig(vocab_size=p.vocab, hidden_size=p.hidden, intermediate_size=p.intermediate,
                       num_hidden_layers=p.layers, num_attention_heads=p.heads, num_key_value_heads=p.kv_heads,
                       max_position_embeddings=p.seq, tie_word_embeddings=False, attention_dropout=0.0)


def build_model(ctx: BenchContext, seed: int = 0) -> nn.Module:
    """Random-init Llama-shaped model, identical in every arm (same seed, built on the target device)."""
    from transformers import LlamaForCausalLM

    torch.manual_seed(seed)
    with torch.device(ctx.device):
        model = LlamaForCausalLM(model_config(ctx.preset))
    return model.to(ctx.dtype)


class CountingCollator:
    """fastfreeze's PaddingCollator (right-padded, width a multiple of 8, labels -100 at padding) that counts
    each batch's real tokens while `counting`."""

    def __init__(self):
        self.pad = PaddingCollator(0, pad_to_multiple_of=8)
        self.counting = False
        self.tokens: list[int] = []

    def __call__(self, features):
        batch = self.pad(features)
        if self.counting:
            self.tokens.append(int(batch["attention_mask"].sum()))
        return batch


class BoundaryCollator(CountingCollator):
    """Floor data: rows of precomputed [n, H] boundaries; labels and mask padded as above, the boundaries into
    `inputs_embeds` [B, T, H] with zeros at padding."""

    def __call__(self, features):
        batch = super().__call__([{"input_ids": f["labels"], "labels": f["labels"]} for f in features])
        embeds = torch.nn.utils.rnn.pad_sequence([f["inputs_embeds"] for f in features], batch_first=True)
        width = batch.pop("input_ids").shape[1]
        return {"inputs_embeds": torch.nn.functional.pad(embeds, (0, 0, 0, width - embeds.shape[1])), **batch}


def training_args(ctx: BenchContext, out_dir: str, ckpt: bool):
    """Same TrainingArguments for every arm; checkpointing is non-reentrant everywhere (HF's 5.x default)."""
    from transformers import TrainingArguments

    kw = dict(output_dir=out_dir, max_steps=ctx.max_steps, per_device_train_batch_size=ctx.preset.batch,
              learning_rate=3e-4, weight_decay=0.0, warmup_steps=0, max_grad_norm=1.0, logging_strategy="no",
              save_strategy="no", report_to=[], seed=0, data_seed=0, dataloader_num_workers=0, disable_tqdm=True,
              use_cpu=ctx.device.type == "cpu", bf16=ctx.dtype == torch.bfloat16 and ctx.device.type == "cuda")
    kw.update(checkpointing_training_kwargs(ckpt, use_reentrant=False if ckpt else None))
    return TrainingArguments(**kw)


def seed_snippet_freeze(model: nn.Module, k: int) -> None:
    """How people freeze today (the seed's snippet)."""
    for p in model.model.embed_tokens.parameters():
        p.requires_grad = False
    for layer in model.model.layers[:k]:
        for p in layer.parameters():
            p.requires_grad = False


@torch.no_grad()
def precompute_boundaries(model: nn.Module, examples: list[dict], k: int, batch: int, device) -> list[torch.Tensor]:
    """Input of block k for every example's real tokens ([n, H] on CPU), via the model's own forward."""
    model.eval()
    out, collator = [], CountingCollator()
    for i in range(0, len(examples), batch):
        b = collator(examples[i:i + batch])
        hs = model.model(input_ids=b["input_ids"].to(device), attention_mask=b["attention_mask"].to(device),
                         output_hidden_states=True, use_cache=False).hidden_states[k]
        for row, m in zip(hs, b["attention_mask"]):
            out.append(row[: int(m.sum())].cpu().clone())
    model.train()
    return out


# ------------------------------------------------------------------------------------------ the arms
def _recording(base):
    """`base` Trainer class that keeps every step's loss (as tensors: no extra device sync per step)."""

    class Recording(base):
        bench_probe = None
        _bench_active = None

        def training_step(self, model, inputs, *args, **kwargs):
            probe = self.bench_probe(len(self.bench_losses), self, inputs) if self.bench_probe is not None else None
            if probe is None:
                loss = super().training_step(model, inputs, *args, **kwargs)
            else:
                with probe:
                    self._bench_active = probe
                    loss = super().training_step(model, inputs, *args, **kwargs)
                    self._bench_active = None
            self.bench_losses.append(loss.detach())
            return loss

        def compute_loss(self, *args, **kwargs):
            out = super().compute_loss(*args, **kwargs)
            if self._bench_active is not None:
                self._bench_active.mark("forward")
            return out

    Recording.__name__ = f"Recording{base.__name__}"
    return Recording


def _dataset(examples):
    from datasets import Dataset

    return Dataset.from_list(examples)


def _liger_patch_fn():
    from liger_kernel.transformers import apply_liger_kernel_to_llama

    return apply_liger_kernel_to_llama


def apply_liger(model: nn.Module | None) -> str:
    """Patch with Liger-Kernel the way its users do. It also patches Llama classes process-wide, so the
    liger arms run last (bench_train orders them so). Versions without `model=` only patch classes,
    so then call this before the model is built (model=None)."""
    from importlib.metadata import PackageNotFoundError, version

    fn = _liger_patch_fn()
    fn(model=model) if model is not None else fn()
    try:
        return version("liger-kernel")
    except PackageNotFoundError:
        return "unknown version"


def _liger_patches_instances() -> bool:
    return "model" in inspect.signature(_liger_patch_fn()).parameters


def run_arm(spec: ArmSpec, ctx: BenchContext, hook: StepHook) -> dict:
    """Build, train ctx.max_steps steps (hook.step_end after each), return timings, losses and notes."""
    import os

    from transformers import Trainer

    from fastfreeze import FastFreezeTrainer, FreezeConfig

    out_dir = os.path.join(ctx.workdir, spec.name.replace("@", "_").replace("=", ""))
    args = training_args(ctx, out_dir, spec.ckpt)
    res: dict = {"notes": []}
    if spec.kind == "liger" and not _liger_patches_instances():
        res["notes"].append(f"liger_kernel {apply_liger(None)} (class patch before the model is built)")
    model = build_model(ctx)
    collator = CountingCollator()
    if spec.kind in ("floor", "floor-loop"):
        boundaries = precompute_boundaries(model, ctx.examples, spec.k, ctx.preset.batch, ctx.device)
        model = suffix_model(model, spec.k)
        data = [{"inputs_embeds": b, "labels": ex["labels"]} for b, ex in zip(boundaries, ctx.examples)]
        collator = BoundaryCollator()
        trainer = _recording(Trainer)(model=model, args=args, train_dataset=data, data_collator=collator)
    elif spec.kind in ("full", "naive", "liger"):
        if spec.kind != "full":
            seed_snippet_freeze(model, spec.k)
        if spec.kind == "liger" and _liger_patches_instances():
            res["notes"].append(f"liger_kernel {apply_liger(model)}")
        trainer = _recording(Trainer)(model=model, args=args, train_dataset=_dataset(ctx.examples),
                                      data_collator=collator)
    elif spec.kind in ("ff", "ff-warm", "ff-cold"):
        cache = None if spec.kind == "ff" else "memory"
        cfg = FreezeConfig(num_frozen_layers=spec.k, kernels=ctx.kernels, cache=cache, fused_loss=ctx.fused_loss)
        trainer = _recording(FastFreezeTrainer)(model=model, args=args, train_dataset=_dataset(ctx.examples),
                                                data_collator=collator, freeze_config=cfg)
        res["kernel_set"] = trainer.freeze_runtime.kernel_set
        if spec.kind == "ff-warm":
            res["cache_build"] = trainer.build_prefix_cache()
    else:
        raise ValueError(f"unknown arm kind {spec.kind!r}; choose from {ARM_KINDS}")
    res["trainable_params"] = sum(p.numel() for p in model.parameters() if p.requires_grad)
    trainer.bench_losses = []
    trainer.bench_probe = ctx.step_probe
    from transformers.trainer_callback import PrinterCallback

    trainer.remove_callback(PrinterCallback)  # keep stdout for the report
    collator.counting = True
    if spec.kind == "floor-loop":
        minimal_loop(trainer, ctx, spec, hook)
    else:
        trainer.add_callback(make_step_callback(hook))
        hook.start()
        trainer.train()
    _collect(res, trainer, collator, spec, ctx)
    del trainer, model
    return res


def _collect(res: dict, trainer, collator, spec: ArmSpec, ctx: BenchContext) -> None:
    """After training: losses, tokens, the memory probe's report, cache counters, prefix throughput."""
    res["losses"] = [float(x) for x in trainer.bench_losses]
    if getattr(trainer, "bench_memory", None) is not None:
        res["memory_step"] = trainer.bench_memory
    res["tokens"] = list(collator.tokens)
    if getattr(trainer, "prefix_cache", None) is not None:
        s = trainer.cache_summary()
        res["cache"] = {"entries": s.entries, "hits": s.hits, "misses": s.misses, "bytes": getattr(s, "bytes", None)}
    if spec.kind == "ff":
        res["prefix_in_training"] = _time_prefix_on_train_batches(trainer, ctx)


def _time_prefix_on_train_batches(trainer, ctx: BenchContext) -> dict:
    """Throughput of the prefix forward as it runs inside training (train batch size, no grad)."""
    prefix = trainer.prefix
    loader = trainer.get_train_dataloader()
    tokens, seconds = 0, 0.0
    for batch in loader:
        inputs = {k: batch[k].to(ctx.device) for k in ("input_ids", "attention_mask")}
        if ctx.device.type == "cuda":
            torch.cuda.synchronize(ctx.device)
        t = time.perf_counter()
        prefix.compute_boundary(**inputs)
        if ctx.device.type == "cuda":
            torch.cuda.synchronize(ctx.device)
        seconds += time.perf_counter() - t
        tokens += int(batch["attention_mask"].sum())
    return {"tokens": tokens, "seconds": seconds, "tokens_per_s": tokens / seconds if seconds else float("nan")}
