"""Building blocks of bench_train: presets, model and data, the training arms, and a round-robin step scheduler.

Every arm is a function ``arm(spec, ctx, hook) -> dict`` that builds its own model (same seed, so
the same weights in every arm), trains ``ctx.max_steps`` optimizer steps and calls
``hook.step_end()`` after each one. The hook records the wall time between consecutive step ends
(data loading, collator, forward, backward, clipping, optimizer: everything the user waits for) and,
under `RoundRobin`, hands the CPU/GPU to the next arm after each window, so machine noise hits all
arms alike.

Usage:
    ctx = BenchContext(PRESETS["toy"], device=torch.device("cpu"), workdir="/tmp/b")
    results = RoundRobin(ctx.schedule).run([ArmSpec("naive", 2, False), ArmSpec("ff-warm", 2, False)], ctx)
"""
from __future__ import annotations

import inspect
import threading
import time
from dataclasses import dataclass, field

import torch
from torch import nn

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


@dataclass(frozen=True)
class Schedule:
    """warmup steps (sequential, unmeasured) then `rounds` x `window` measured steps per arm, interleaved."""

    warmup: int
    rounds: int
    window: int

    @property
    def steps(self) -> int:
        return self.warmup + self.rounds * self.window


@dataclass(frozen=True)
class Preset:
    name: str
    layers: int
    hidden: int
    intermediate: int
    heads: int
    kv_heads: int
    vocab: int
    seq: int
    batch: int
    dtype: str
    k: int
    examples: int  # a fixed set revisited every epoch, so a warm cache is really hit
    schedule: Schedule
    sweep_schedule: Schedule

    def sweep_ks(self) -> list[int]:
        L = self.layers
        return sorted({0, min(2, L), L // 4, L // 2, (3 * L) // 4})


PRESETS = {
    "toy": Preset("toy", 4, 64, 128, 4, 2, 256, 32, 4, "float32", 2, 16, Schedule(1, 1, 1), Schedule(1, 1, 1)),
    "cpu-small": Preset("cpu-small", 12, 512, 1376, 8, 8, 8192, 256, 8, "float32", 6, 64,
                        Schedule(2, 5, 1), Schedule(2, 5, 1)),  # on CPU step 2 is still ~2x slow (allocator warm-up)
    # Llama-3.2-1B shapes, but with an untied head (a frozen tied embedding would freeze the head too).
    "gpu-1b": Preset("gpu-1b", 16, 2048, 8192, 32, 8, 128256, 2048, 4, "bfloat16", 8, 64,
                     Schedule(2, 3, 2), Schedule(1, 5, 1)),
    "gpu-8b-slice": Preset("gpu-8b-slice", 8, 4096, 14336, 32, 8, 128256, 2048, 2, "bfloat16", 4, 32,
                           Schedule(2, 3, 2), Schedule(1, 5, 1)),
}


@dataclass(frozen=True)
class ArmSpec:
    kind: str
    k: int
    ckpt: bool

    @property
    def name(self) -> str:
        return f"{self.kind}{'+ckpt' if self.ckpt else ''}@k={self.k}"


@dataclass
class BenchContext:
    """What every arm of one run shares: preset, device, data, schedule, scratch directory."""

    preset: Preset
    device: torch.device
    workdir: str
    schedule: Schedule | None = None
    kernels: str = "auto"
    examples: list = field(default_factory=list)

    def __post_init__(self):
        self.schedule = self.schedule or self.preset.schedule
        if not self.examples:
            self.examples = make_examples(self.preset)

    @property
    def dtype(self) -> torch.dtype:
        return getattr(torch, self.preset.dtype)

    @property
    def max_steps(self) -> int:
        return self.schedule.steps


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


def make_examples(p: Preset, seed: int = 1234) -> list[dict]:
    """Random token rows, lengths uniform in [seq/2, seq], fixed seed; labels = input_ids."""
    g = torch.Generator().manual_seed(seed)
    rows = []
    for _ in range(p.examples):
        n = int(torch.randint(p.seq // 2, p.seq + 1, (1,), generator=g))
        ids = torch.randint(1, p.vocab, (n,), generator=g).tolist()
        rows.append({"input_ids": ids, "labels": list(ids)})
    return rows


class PadCollator:
    """Right-pads to the longest row (multiple of 8); counts real tokens of each batch while `counting`."""

    key = "input_ids"

    def __init__(self):
        self.counting = False
        self.tokens: list[int] = []

    def __call__(self, features):
        lengths = [len(f[self.key]) for f in features]
        width = -(-max(lengths) // 8) * 8
        first = torch.as_tensor(features[0][self.key])
        values = torch.zeros(len(features), width, *first.shape[1:], dtype=first.dtype)
        labels = torch.full((len(features), width), -100, dtype=torch.long)
        mask = torch.zeros(len(features), width, dtype=torch.long)
        for i, (f, n) in enumerate(zip(features, lengths)):
            values[i, :n] = torch.as_tensor(f[self.key])
            labels[i, :n] = torch.as_tensor(f["labels"])
            mask[i, :n] = 1
        if self.counting:
            self.tokens.append(sum(lengths))
        return {self.key: values, "attention_mask": mask, "labels": labels}


class BoundaryPadCollator(PadCollator):
    """Floor data: pads precomputed [n, H] boundaries into `inputs_embeds` [B, T, H] (zeros at padding)."""

    key = "inputs_embeds"


def training_args(ctx: BenchContext, out_dir: str, ckpt: bool):
    """Same TrainingArguments for every arm; checkpointing is non-reentrant everywhere (HF's 5.x default)."""
    from transformers import TrainingArguments

    params = inspect.signature(TrainingArguments.__init__).parameters
    new = "activation_checkpointing" in params  # 5.24 renamed gradient_checkpointing; 5.17 has the old name
    kw = dict(output_dir=out_dir, max_steps=ctx.max_steps, per_device_train_batch_size=ctx.preset.batch,
              learning_rate=3e-4, weight_decay=0.0, warmup_steps=0, max_grad_norm=1.0, logging_strategy="no",
              save_strategy="no", report_to=[], seed=0, data_seed=0, dataloader_num_workers=0, disable_tqdm=True,
              use_cpu=ctx.device.type == "cpu", bf16=ctx.dtype == torch.bfloat16 and ctx.device.type == "cuda")
    kw["activation_checkpointing" if new else "gradient_checkpointing"] = ckpt
    if ckpt:
        kw["activation_checkpointing_kwargs" if new else "gradient_checkpointing_kwargs"] = {"use_reentrant": False}
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
    out, collator = [], PadCollator()
    for i in range(0, len(examples), batch):
        b = collator(examples[i:i + batch])
        hs = model.model(input_ids=b["input_ids"].to(device), attention_mask=b["attention_mask"].to(device),
                         output_hidden_states=True, use_cache=False).hidden_states[k]
        for row, m in zip(hs, b["attention_mask"]):
            out.append(row[: int(m.sum())].cpu().clone())
    model.train()
    return out


def suffix_model(model: nn.Module, k: int) -> nn.Module:
    """A LlamaForCausalLM made of `model`'s layers[k:], norm, rotary and head (shared modules), fed
    `inputs_embeds`: the model's own forward, mask and loss, with nothing below block k."""
    from transformers import LlamaForCausalLM

    cfg = model.config.__class__.from_dict(model.config.to_dict())
    cfg.num_hidden_layers = model.config.num_hidden_layers - k
    cfg.use_cache = False  # a KV cache would index layers by their original layer_idx (>= L - k)
    with torch.device("meta"):
        suffix = LlamaForCausalLM(cfg)
    suffix.model.layers = nn.ModuleList(model.model.layers[k:])
    suffix.model.norm, suffix.model.rotary_emb, suffix.lm_head = model.model.norm, model.model.rotary_emb, model.lm_head
    w = model.model.embed_tokens.weight
    suffix.model.embed_tokens = nn.Embedding(1, w.shape[1], device=w.device, dtype=w.dtype).requires_grad_(False)
    suffix.config._attn_implementation = model.config._attn_implementation
    left = [n for n, t in list(suffix.named_parameters()) + list(suffix.named_buffers()) if t.is_meta]
    if left:
        raise RuntimeError(f"suffix_model left meta tensors {left[:3]}; the model layout changed")
    return suffix


# ------------------------------------------------------------------------------------------ timing hook
class StepHook:
    """Records wall time between consecutive step ends; `RoundRobin` subclasses it to pause between windows."""

    def __init__(self, device: torch.device):
        self.device = device
        self.times: list[float] = []
        self._last: float | None = None
        self.peak_bytes: int | None = None

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def start(self) -> None:
        """Call right before the training loop starts."""
        self._sync()
        self._last = time.perf_counter()

    def step_end(self) -> None:
        self._sync()
        now = time.perf_counter()
        self.times.append(now - self._last)
        self._after_step()
        self._last = time.perf_counter()  # time spent paused is not the arm's

    def _after_step(self) -> None:
        pass


def make_step_callback(hook: StepHook):
    from transformers import TrainerCallback

    class _Clock(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            hook.step_end()

    return _Clock()


class RoundRobin:
    """Runs arms in threads that take turns: each arm's warm-up in sequence, then `rounds` windows of
    `window` steps across all arms, one arm active at a time (the others wait inside `step_end`).

    CUDA peak memory is measured per arm during its first turn: the other arms are paused and hold
    constant memory, so max_allocated - allocated(before the arm was built) is exactly this arm's peak.
    """

    def __init__(self, schedule: Schedule):
        self.schedule = schedule
        self.cond = threading.Condition()
        self.turn: int | None = None
        self.quota: dict[int, int] = {}

    class _Hook(StepHook):
        def __init__(self, rr: "RoundRobin", idx: int, device: torch.device):
            super().__init__(device)
            self.rr, self.idx = rr, idx

        def _after_step(self) -> None:
            rr = self.rr
            rr.quota[self.idx] -= 1
            if rr.quota[self.idx] > 0 or len(self.times) >= rr.schedule.steps:
                return
            with rr.cond:
                rr.turn = None
                rr.cond.notify_all()
                rr.cond.wait_for(lambda: rr.turn == self.idx)

        def wait_first_turn(self) -> None:
            with self.rr.cond:
                self.rr.cond.wait_for(lambda: self.rr.turn == self.idx)

    def run(self, specs: list[ArmSpec], ctx: BenchContext, arm_fn) -> list[dict]:
        """Run `arm_fn(spec, ctx, hook)` for every spec, interleaved; returns one result dict per spec."""
        hooks = [self._Hook(self, i, ctx.device) for i in range(len(specs))]
        results: list[dict] = [{} for _ in specs]
        done = [False] * len(specs)

        def body(i: int) -> None:
            hooks[i].wait_first_turn()
            try:
                results[i] = arm_fn(specs[i], ctx, hooks[i])
            except Exception as err:  # one broken arm must not hang or kill the others
                import traceback
                results[i] = {"error": f"{type(err).__name__}: {err}", "traceback": traceback.format_exc()}
            finally:
                with self.cond:
                    done[i] = True
                    self.turn = None
                    self.cond.notify_all()

        threads = [threading.Thread(target=body, args=(i,), daemon=True, name=specs[i].name) for i in range(len(specs))]
        for t in threads:
            t.start()
        s = self.schedule
        for i in range(len(specs)):
            base = self._cuda_begin(ctx.device)
            self._grant(i, s.warmup if s.rounds else s.steps, done)
            hooks[i].peak_bytes = self._cuda_peak(ctx.device, base)
        for _ in range(s.rounds):
            for i in range(len(specs)):
                self._grant(i, s.window, done)
        for i in range(len(specs)):  # let each arm finish (train() returns, results and cleanup)
            self._grant(i, 0, done)
            threads[i].join()
        for i, r in enumerate(results):
            r.setdefault("step_times", hooks[i].times)
            r["peak_bytes_cuda"] = hooks[i].peak_bytes
        return results

    def _grant(self, i: int, steps: int, done: list[bool]) -> None:
        with self.cond:
            if done[i]:
                return
            self.quota[i] = steps
            self.turn = i
            self.cond.notify_all()
            self.cond.wait_for(lambda: self.turn is None)

    @staticmethod
    def _cuda_begin(device) -> int | None:
        if device.type != "cuda":
            return None
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        return torch.cuda.memory_allocated(device)

    @staticmethod
    def _cuda_peak(device, base) -> int | None:
        if base is None:
            return None
        torch.cuda.synchronize(device)
        return torch.cuda.max_memory_allocated(device) - base


# ------------------------------------------------------------------------------------------ the arms
def _recording(base):
    """`base` Trainer class that keeps every step's loss (as tensors: no extra device sync per step)."""

    class Recording(base):
        def training_step(self, model, inputs, *args, **kwargs):
            loss = super().training_step(model, inputs, *args, **kwargs)
            self.bench_losses.append(loss.detach())
            return loss

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
    collator = PadCollator()
    if spec.kind in ("floor", "floor-loop"):
        boundaries = precompute_boundaries(model, ctx.examples, spec.k, ctx.preset.batch, ctx.device)
        model = suffix_model(model, spec.k)
        data = [{"inputs_embeds": b, "labels": ex["labels"]} for b, ex in zip(boundaries, ctx.examples)]
        collator = BoundaryPadCollator()
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
        cfg = FreezeConfig(num_frozen_layers=spec.k, kernels=ctx.kernels, cache=cache)
        trainer = _recording(FastFreezeTrainer)(model=model, args=args, train_dataset=_dataset(ctx.examples),
                                                data_collator=collator, freeze_config=cfg)
        res["kernel_set"] = trainer.freeze_runtime.kernel_set
        if spec.kind == "ff-warm":
            res["cache_build"] = trainer.build_prefix_cache()
    else:
        raise ValueError(f"unknown arm kind {spec.kind!r}; choose from {ARM_KINDS}")
    res["trainable_params"] = sum(p.numel() for p in model.parameters() if p.requires_grad)
    trainer.bench_losses = []
    from transformers.trainer_callback import PrinterCallback

    trainer.remove_callback(PrinterCallback)  # keep stdout for the report
    collator.counting = True
    if spec.kind == "floor-loop":
        _minimal_loop(trainer, ctx, spec, hook)
    else:
        trainer.add_callback(make_step_callback(hook))
        hook.start()
        trainer.train()
    res["losses"] = [float(x) for x in trainer.bench_losses]
    res["tokens"] = list(collator.tokens)
    if getattr(trainer, "prefix_cache", None) is not None:
        s = trainer.cache_summary()
        res["cache"] = {"entries": s.entries, "hits": s.hits, "misses": s.misses, "bytes": getattr(s, "bytes", None)}
    if spec.kind == "ff":
        res["prefix_in_training"] = _time_prefix_on_train_batches(trainer, ctx)
    del trainer, model
    return res


def _minimal_loop(trainer, ctx: BenchContext, spec: ArmSpec, hook: StepHook) -> None:
    """The floor without Trainer's loop: same optimizer, scheduler, data order, clipping; nothing else."""
    from transformers import set_seed

    model = trainer.model.to(ctx.device)
    if spec.ckpt:
        enable = getattr(model, "activation_checkpointing_enable", None)
        if enable is not None:
            enable(activation_checkpointing_kwargs={"use_reentrant": False})
        else:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    trainer.create_optimizer_and_scheduler(num_training_steps=ctx.max_steps)
    opt, sched = trainer.optimizer, trainer.lr_scheduler
    set_seed(trainer.args.seed)
    loader = trainer.get_train_dataloader()
    params = [p for p in model.parameters() if p.requires_grad]
    autocast = (torch.autocast(ctx.device.type, dtype=torch.bfloat16) if trainer.args.bf16
                else torch.autocast(ctx.device.type, enabled=False))
    model.train()
    hook.start()
    step = 0
    while step < ctx.max_steps:
        for batch in loader:
            batch = {k: v.to(ctx.device, non_blocking=True) for k, v in batch.items()}
            with autocast:
                loss = model(**batch).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, trainer.args.max_grad_norm)
            opt.step()
            sched.step()
            opt.zero_grad(set_to_none=True)
            trainer.bench_losses.append(loss.detach())
            step += 1
            hook.step_end()
            if step >= ctx.max_steps:
                break


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
