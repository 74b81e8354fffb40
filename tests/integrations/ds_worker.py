"""One rank of the DeepSpeed test: `torchrun --nproc_per_node 2 -m tests.integrations.ds_worker OUT_DIR SCENARIOS` (gloo, DS_ACCELERATOR=cpu).

Each scenario builds what a user's script builds: `TrainingArguments(deepspeed=config)` first, then
`from_pretrained` (under a ZeRO-3 config transformers loads inside `deepspeed.zero.Init`, so every
rank holds empty placeholders from the start), then the trainer. Arms: `ref` is plain Trainer with
the seed-snippet freeze (`requires_grad=False`), the others FastFreezeTrainer without a cache, with a
disk cache both ranks share, with a memory cache per rank, resumed from z3_ff's DeepSpeed
checkpoint at step 4, or with kernels="triton" and the fused loss (the GPU defaults; interpreted: the
test launches with TRITON_INTERPRET=1); `sft_ref` / `sft_ff` are TRL's SFTTrainer with the seed snippet and
FastFreezeSFTTrainer. Writes each rank's facts as JSON and the final weights
(ZeRO-3: gathered one parameter at a time) from rank 0.
"""
from __future__ import annotations

import importlib.util
import json
import os
import sys

import torch

torch.set_num_threads(1)

import torch.distributed as dist  # noqa: E402
import transformers  # noqa: E402
from datasets import Dataset  # noqa: E402
from transformers import Trainer, TrainerCallback  # noqa: E402

from fastfreeze import FastFreezeTrainer, FreezeConfig, FreezeConfigError  # noqa: E402
from fastfreeze.trainer import FreezeMixin  # noqa: E402
from tests._helpers import make_rows, pad_collator, seed_snippet_freeze  # noqa: E402
from tests.parity.harness import training_args  # noqa: E402

K, ROWS, STEPS, PAD_TO = 2, 16, 8, 12  # 2 epochs of 4 global batches of 4 (2 ranks x 2 rows)
SFT_ROWS, SFT_STEPS = 8, 4  # TRL's SFTTrainer: 2 epochs of 2 global batches of 4 (few steps: CI time)
# TRL is an optional extra too: its scenarios run where it is installed.
SFT_SCENARIOS = ("z2_sft_ref", "z2_sft_ff", "z3_sft_ref", "z3_sft_ff") if importlib.util.find_spec("trl") else ()
SCENARIOS = ("z1_ref", "z1_ff", "z2_ref", "z2_ff", "z2_disk", "z3_ref", "z3_ff", "z3_disk", "z3_memory",
             "z3_resume", "z3_triton") + SFT_SCENARIOS
TRITON_OPS = ("rms_norm", "swiglu", "linear_cross_entropy")


EXAMPLES = os.path.join(os.path.dirname(__file__), "..", "..", "examples")


def ds_config(stage: int) -> dict:
    """The shipped config (examples/deepspeed_zero{2,3}.json; ZeRO-1: the ZeRO-2 one at stage 1, which
    partitions only the optimizer state), plus for ZeRO-3 two test-only settings:
    every parameter of the tiny model is below DeepSpeed's persistence threshold, so it would keep
    them all whole; 0 makes each one a real partition. No prefetch, so the gathers seen are exactly
    one module's at a time (what fastfreeze controls)."""
    with open(os.path.join(EXAMPLES, f"deepspeed_zero{max(stage, 2)}.json")) as f:
        config = json.load(f)
    config["zero_optimization"]["stage"] = stage
    if stage == 3:
        config["zero_optimization"].update(stage3_param_persistence_threshold=0, stage3_prefetch_bucket_size=0)
    return config


class RecordingCollator:
    """A collator (the pad collator, or SFTTrainer's own), keeping the rows (token ids) of every batch it
    makes, in order."""

    def __init__(self, inner=None):
        self.inner, self.batches = inner or pad_collator(pad_to=PAD_TO), []

    def __call__(self, features):
        self.batches.append(sorted(tuple(f["input_ids"]) for f in features))
        return self.inner(features)


class PrefixWatch(TrainerCallback):
    """Per step: how many prefix leaf modules ran (each one a ZeRO-3 gather), and the most prefix
    weights ever whole at once (elements), seen from a forward pre-hook that runs after the engine's
    (the engine registers its hooks at train start, before on_train_begin)."""

    def __init__(self, prefix_modules):
        self.leaves = [m for top in prefix_modules for m in top.modules() if any(True for _ in m.parameters(recurse=False))]
        self.params = [p for top in prefix_modules for p in top.parameters()]
        self.calls, self.steps, self.max_whole, self.handles = 0, [], 0, []

    def on_train_begin(self, args, state, control, **kwargs):
        self.handles = [m.register_forward_pre_hook(self.seen) for m in self.leaves]

    def seen(self, module, args):
        self.calls += 1
        self.max_whole = max(self.max_whole, sum(p.data.numel() for p in self.params))

    def on_step_end(self, args, state, control, **kwargs):
        self.steps.append(self.calls)
        self.calls = 0

    def on_train_end(self, args, state, control, **kwargs):
        for h in self.handles:
            h.remove()


def build(root: str, scenario: str, tiny: str, k: int = K, **extra):
    stage, arm = int(scenario[1]), scenario.split("_", 1)[1]
    # First the arguments (they declare ZeRO-3 to transformers), then the model: as real scripts do.
    common = dict(per_device_train_batch_size=2, ddp_backend="gloo", logging_steps=1, deepspeed=ds_config(stage))
    if arm.startswith("sft_"):
        from tests.integrations.test_trl import sft_args  # needs TRL: only its scenarios import it

        args = sft_args(os.path.join(root, scenario), steps=SFT_STEPS, gradient_accumulation_steps=1, **common)
    else:
        args = training_args(os.path.join(root, scenario), steps=STEPS, grad_accum=1, **common, **extra)
    model = transformers.AutoModelForCausalLM.from_pretrained(tiny, attn_implementation="eager")
    at_load = {"partitioned_at_load": all(hasattr(p, "ds_id") and p.numel() == 0 for p in model.parameters()),
               "hub_kernels_at_load": bool(getattr(model, "use_kernels", False))}  # transformers >= 5.2x + `kernels`
    if arm.startswith("sft_"):
        return build_sft(model, args, arm, k), at_load
    at_load["recorder"] = recorder = RecordingCollator()
    kw = dict(model=model, args=args, train_dataset=Dataset.from_list(make_rows(ROWS)), data_collator=recorder)
    cache = {"disk": "disk", "memory": "memory"}.get(arm)
    cfg = FreezeConfig(num_frozen_layers=k, cache=cache, kernels="triton" if arm == "triton" else "auto",
                       cache_dir=os.path.join(root, f"{scenario}-cache") if cache == "disk" else None)
    if arm == "ref":
        seed_snippet_freeze(model, "llama", k)
        return Trainer(**kw), at_load
    return FastFreezeTrainer(**kw, freeze_config=cfg), at_load


def build_sft(model, args, arm: str, k: int):
    """TRL's SFTTrainer with its defaults (its collator, completion-only loss, activation checkpointing)
    and the seed-snippet freeze, or FastFreezeSFTTrainer; the rows test_trl.py trains on."""
    from trl import SFTTrainer

    from fastfreeze.integrations.trl import FastFreezeSFTTrainer
    from tests.integrations.test_trl import _tokenizer, sft_dataset

    kw = dict(model=model, args=args, train_dataset=sft_dataset(SFT_ROWS), processing_class=_tokenizer())
    if arm == "sft_ref":
        seed_snippet_freeze(model, "llama", k)
        trainer = SFTTrainer(**kw)
    else:
        trainer = FastFreezeSFTTrainer(**kw, freeze_config=FreezeConfig(num_frozen_layers=k))
    # SFTTrainer builds its collator at construction; Trainer reads self.data_collator when train() builds
    # the DataLoader (no cache here, so fastfreeze has not wrapped it).
    trainer.data_collator = RecordingCollator(trainer.data_collator)
    return trainer


class TritonCalls(TrainerCallback):
    """Counts, per training step, the csrc_triton ops the swapped forwards call (they look each op up at call
    time), and the calls whose weight was not whole (a ZeRO-3 placeholder or partition): none, if the
    engine's hooks gathered the module's weights around the kernel. Per step, not in total: the install
    check and the probe call the ops too, and a kernel dropped before the first step must show as 0."""

    def __init__(self):
        import csrc_triton

        self.calls, self.partial, self.steps, self.originals = dict.fromkeys(TRITON_OPS, 0), 0, [], {}
        for name in TRITON_OPS:
            self.originals[name] = original = getattr(csrc_triton, name)
            setattr(csrc_triton, name, self._counted(name, original))

    def _counted(self, name, original):
        def counted(*args, **kwargs):
            self.calls[name] += 1
            weight = args[1] if name != "swiglu" else None  # rms_norm(x, weight, ...), linear_cross_entropy(h, weight, ...)
            if weight is not None and weight.numel() != getattr(weight, "ds_numel", weight.numel()):
                self.partial += 1
            return original(*args, **kwargs)

        return counted

    def on_step_begin(self, args, state, control, **kwargs):
        self.calls = dict.fromkeys(TRITON_OPS, 0)

    def on_step_end(self, args, state, control, **kwargs):
        self.steps.append(dict(self.calls))

    def restore(self) -> dict:
        import csrc_triton

        for name, original in self.originals.items():
            setattr(csrc_triton, name, original)
        return {"triton_step_calls": self.steps, "triton_partial_weight_calls": self.partial}


def optimizer_facts(trainer) -> dict:
    """What the engine's ZeRO optimizer holds on this rank: the parameters it trains (by name), the
    elements of its fp32 partitions, and the bytes of its Adam moments."""
    engine = trainer.model_wrapped
    opt = engine.optimizer
    groups = opt.fp16_groups if engine.zero_optimization_stage() == 3 else opt.bit16_groups
    names = {id(p): n for n, p in trainer.model.named_parameters()}
    moments = sum(v.numel() * v.element_size() for st in opt.optimizer.state.values()
                  for key, v in st.items() if key in ("exp_avg", "exp_avg_sq"))
    fp32 = opt.fp32_partitioned_groups_flat if engine.zero_optimization_stage() == 3 else opt.single_partition_of_fp32_groups
    return {"zero_stage": engine.zero_optimization_stage(), "engine": type(engine).__name__,
            "optimizer_params": sorted(names[id(p)] for g in groups for p in g),
            "fp32_partition_numel": sum(t.numel() for t in fp32), "moment_bytes": moments}


def full_weights(model) -> dict:
    """Every parameter whole on CPU (ZeRO-3: gathered one at a time, a collective on every rank)."""
    import deepspeed

    out = {}
    for name, p in model.named_parameters():
        with deepspeed.zero.GatheredParameters([p], enabled=hasattr(p, "ds_id")):
            out[name] = p.detach().clone().cpu()
    return out


def run(root: str, scenario: str, tiny: str, rank: int) -> dict:
    extra = {"save_strategy": "steps", "save_steps": 4} if scenario == "z3_ff" else {}
    trainer, facts = build(root, scenario, tiny, **extra)
    ff = isinstance(trainer, FreezeMixin)
    recorder = facts.pop("recorder", None) or trainer.data_collator
    facts["completed_at_init"] = ff and trainer.freeze_runtime.completed
    prefix_modules = [trainer.model.model.embed_tokens] + [trainer.model.model.layers[i] for i in range(K)]
    watch = PrefixWatch(prefix_modules)
    trainer.add_callback(watch)
    resume = os.path.join(root, "z3_ff", "checkpoint-4") if scenario == "z3_resume" else None
    if resume:
        facts["refused_other_k"] = refused_other_freeze(root, tiny, resume)
    triton = TritonCalls() if scenario.endswith("_triton") else None
    if triton is not None:
        trainer.add_callback(triton)
    trainer.train(resume_from_checkpoint=resume)
    if triton is not None:
        facts.update(triton.restore())
    facts.update(losses=[h["loss"] for h in trainer.state.log_history if "loss" in h], trainer=type(trainer).__name__,
                 gradient_checkpointing=trainer.args.gradient_checkpointing,
                 batches=recorder.batches,
                 world_size=trainer.args.world_size, prefix_leaf_calls=watch.steps, max_prefix_whole=watch.max_whole,
                 prefix_numel=sum(p.ds_numel if hasattr(p, "ds_numel") else p.numel() for p in watch.params),
                 frozen_with_grad=[n for n, p in trainer.model.named_parameters() if not p.requires_grad and p.grad is not None],
                 frozen_partition_numel=sum(p.ds_tensor.numel() for p in trainer.model.parameters()
                                            if not p.requires_grad and hasattr(p, "ds_tensor")),
                 rank=rank, **optimizer_facts(trainer))
    if ff:
        summary = trainer.cache_summary()
        facts.update(notes=trainer.freeze_report.notes, prefix_calls=trainer.prefix.prefix_calls,
                     counts=[trainer.freeze_report.frozen_params, trainer.freeze_report.trainable_params],
                     probe=trainer.freeze_runtime.probe is not None,
                     cache=None if summary is None else {"hits": summary.hits, "misses": summary.misses,
                                                         "entries": summary.entries},
                     fingerprint=trainer.prefix_cache.cache.fingerprint if trainer.prefix_cache else None,
                     saved_config=os.path.exists(os.path.join(root, scenario, "checkpoint-4", "fastfreeze_config.json")))
    weights = full_weights(trainer.model)
    if rank == 0:
        torch.save(weights, os.path.join(root, f"{scenario}.pt"))
    return facts


def refused_other_freeze(root: str, tiny: str, checkpoint: str) -> str:
    """Resuming z3_ff's checkpoint with another freeze (k=1) must be refused before training starts."""
    other, _ = build(root, "z3_other", tiny, k=1)
    try:
        other.train(resume_from_checkpoint=checkpoint)
    except FreezeConfigError as err:
        return str(err)
    return ""


def main() -> None:
    root, scenarios = sys.argv[1], sys.argv[2].split(",")
    rank = int(os.environ["RANK"])
    tiny = os.path.join(root, "tiny")  # saved by the test before the launch
    for scenario in scenarios:
        facts = run(root, scenario, tiny, rank)
        with open(os.path.join(root, f"{scenario}.rank{rank}.json"), "w") as f:
            json.dump(facts, f)
        dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
