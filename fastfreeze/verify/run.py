"""`fastfreeze verify`: train a few steps with the plain freeze recipe and with FastFreezeTrainer, and compare.

Both arms start from the same weights, data order and seed. The reference is the recipe people run
today: `requires_grad=False` on the embedding side and blocks[:k] (located with `fastfreeze.arch`,
not frozen by fastfreeze's code) + a plain `transformers.Trainer`. The other arm is
FastFreezeTrainer with the chosen kernels and cache. The report compares every micro-batch loss,
the trained parameters, and checks that frozen parameters are bitwise unchanged in both arms.

Usage:
    report = verify(model, rows, FreezeConfig(num_frozen_layers=6), steps=8); print(report)
    fastfreeze verify --model path/to/model --data train.jsonl --num-frozen-layers 6
"""
from __future__ import annotations

import copy
import dataclasses
import gc
import math
import os
import shutil
import sys
import tempfile
from dataclasses import asdict, dataclass, field

import torch
from torch import nn
from transformers import Trainer, TrainingArguments
from transformers.trainer_callback import PrinterCallback

from . import _io
from .arch import UnsupportedModelError, resolve
from .config import FreezeConfig, FreezeConfigError
from .freezing import boundary_dependencies
from .trainer import FastFreezeTrainer
from .data.collate import PaddingCollator
from .verify_data import (PeakMemory, StepTimer, VerifyError, WeightStore, as_dataset, check_fits_twice,
                          rows_needed)

# Unit roundoff u of the compute dtype (half the spacing of numbers in [1, 2)).
UNIT_ROUNDOFF = {"fp32": 2.0 ** -24, "bf16": 2.0 ** -8, "fp16": 2.0 ** -11}
FP32_FLOOR = 1e-5  # the parity suite's fp32 tolerance (tests/parity)
# Why: both arms run the same math; fused kernels round once where eager ops round several times, so
# one step differs by a few u, and independent rounding differences add up like a random walk over
# the steps (sqrt). In fp32 the 1e-5 floor (~170 u, the parity suite's tolerance) applies.
TOLERANCE_RULE = "max(1e-5, 4 * u * sqrt(steps)), u = unit roundoff of the dtype (fp32 2^-24, bf16 2^-8, fp16 2^-11)"


@dataclass(frozen=True)
class Tolerances:
    """Pass thresholds: per micro-batch |loss_ff - loss_ref| <= loss_rtol * |loss_ref|; per trainable
    tensor max|w_ff - w_ref| <= param_rtol * max|w_ref|; frozen tensors bitwise equal to the start."""

    dtype: str
    loss_rtol: float
    param_rtol: float

    @classmethod
    def for_dtype(cls, dtype: str, steps: int) -> "Tolerances":
        """Usage: Tolerances.for_dtype("bf16", steps=8).loss_rtol  # 4.4e-2"""
        if dtype not in UNIT_ROUNDOFF:
            raise VerifyError(f"dtype={dtype!r}; choose one of {sorted(UNIT_ROUNDOFF)}.")
        tol = max(FP32_FLOOR, 4.0 * UNIT_ROUNDOFF[dtype] * math.sqrt(max(1, steps)))
        return cls(dtype=dtype, loss_rtol=tol, param_rtol=tol)


@dataclass
class ArmResult:
    """What one arm measured."""

    name: str
    losses: list[float]
    step_seconds: float  # median seconds per optimizer step after the first (warm-up) step
    peak_memory_bytes: int  # peak above the arm's starting point (weights already loaded)
    frozen: list[str]  # names of parameters that did not train
    frozen_changed: list[str]  # frozen parameters whose bits differ from the initial weights
    kernel_set: str = "torch"
    cache: dict | None = None


@dataclass
class VerifyReport:
    """Result of `verify`. `print(report)` gives the table; `report.passed` the verdict.

    Usage: report = verify(...); sys.exit(0 if report.passed else 1)
    """

    model: str
    frozen_desc: str  # what both arms froze, in words
    num_frozen_layers: int
    dtype: str
    kernels: str
    cache: str | None
    steps: int
    batch_size: int
    grad_accum: int
    device: str
    memory_kind: str
    optim: str
    learning_rate: float
    tolerances: Tolerances
    reference: ArmResult
    fastfreeze: ArmResult
    param_max_rel: float
    param_worst: str
    failures: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not self.failures

    @property
    def verdict(self) -> str:
        return "PASS" if self.passed else "FAIL"

    def to_dict(self) -> dict:
        return {**asdict(self), "verdict": self.verdict}

    def __str__(self) -> str:
        return format_report(self)


def format_report(r: VerifyReport) -> str:
    """The human-readable table of a VerifyReport."""
    tol, ref, ff = r.tolerances, r.reference, r.fastfreeze
    ok = lambda good: "ok" if good else "FAIL"  # noqa: E731
    out = [f"fastfreeze verify: {r.model}, frozen: {r.frozen_desc}",
           f"  {r.steps} steps x batch {r.batch_size} x accumulation {r.grad_accum}, {r.dtype} on {r.device}, "
           f"kernels {r.kernels} (ran: {ff.kernel_set}), cache {r.cache or 'none'}, {r.optim} lr {r.learning_rate:g}",
           f"  tolerances ({tol.dtype}): loss rel <= {tol.loss_rtol:.1e}, trainable params max rel <= "
           f"{tol.param_rtol:.1e}, frozen params bitwise equal", f"  tolerance rule: {TOLERANCE_RULE}", "",
           f"{'step':>5} {'micro':>5}  {'reference loss':>18}  {'fastfreeze loss':>18}  "
           f"{'abs diff':>9}  {'rel diff':>9}"]
    for i, (a, b) in enumerate(zip(ref.losses, ff.losses)):
        diff = abs(b - a)
        rel = diff / abs(a) if a else float("inf") if diff else 0.0
        out.append(f"{i // r.grad_accum + 1:>5} {i % r.grad_accum + 1:>5}  {a:>18.12f}  {b:>18.12f}  "
                   f"{diff:>9.2e}  {rel:>9.2e}  {ok(_loss_ok(a, b, tol.loss_rtol))}")
    out += ["",
            f"trainable params: max rel diff {r.param_max_rel:.2e} ({r.param_worst})  "
            f"{ok(r.param_max_rel <= tol.param_rtol)}",
            f"frozen params bitwise unchanged: reference {_yes(ref)}, fastfreeze {_yes(ff)} "
            f"({len(ff.frozen)} tensors)  {ok(not ref.frozen_changed and not ff.frozen_changed)}", "",
            f"{'':<24}{'reference':>14}{'fastfreeze':>14}{'ratio':>10}",
            f"{'step time (median)':<24}{_ms(ref.step_seconds):>14}{_ms(ff.step_seconds):>14}"
            f"{_ratio(ref.step_seconds, ff.step_seconds, 'x faster'):>10}",
            f"{'peak memory ' + r.memory_kind:<24}{_mib(ref.peak_memory_bytes):>14}{_mib(ff.peak_memory_bytes):>14}"
            f"{_ratio(ref.peak_memory_bytes, ff.peak_memory_bytes, 'x less'):>10}"]
    if ff.cache:
        out.append(f"cache: {ff.cache['hits']} hits, {ff.cache['misses']} misses, {ff.cache['entries']} entries")
    out += [f"note: {n}" for n in r.notes]
    out += [f"failure: {f}" for f in r.failures]
    out.append(f"verdict: {r.verdict}")
    return "\n".join(out)


def _yes(arm: ArmResult) -> str:
    return "yes" if not arm.frozen_changed else f"NO ({len(arm.frozen_changed)} changed: {arm.frozen_changed[:3]})"


def _ms(s: float) -> str:
    return "-" if math.isnan(s) else f"{1e3 * s:.1f} ms"


def _mib(b: int) -> str:
    return f"{b / 2 ** 20:.1f} MiB"


def _ratio(a: float, b: float, label: str) -> str:
    return f"{a / b:.2f}{label[:1]}" if b and a and not math.isnan(a) and not math.isnan(b) else "-"


def _loss_ok(a: float, b: float, rtol: float) -> bool:
    return math.isfinite(a) and math.isfinite(b) and abs(b - a) <= rtol * abs(a)


# ---------------------------------------------------------------------------------------- the two arms
def reference_freeze(model: nn.Module, config: FreezeConfig) -> None:
    """The seed recipe, generically: requires_grad=False on the embedding-side modules and blocks[:k]
    (never True on anything: what the model keeps frozen stays frozen); plus the parameters the boundary
    depends on, which the README's rule freezes and FreezeReport states (e.g. bare scales on the base
    model). The head gets its own copy of a tied embedding matrix first when `untie_embeddings` asks."""
    parts = resolve(model)
    if config.freeze_embeddings and config.untie_embeddings:
        emb_w = getattr(parts.embedding_side[0][1], "weight", None)
        if emb_w is not None and getattr(parts.head, "weight", None) is emb_w:
            parts.head.weight = nn.Parameter(emb_w.detach().clone())
    modules = [m for _, m in parts.embedding_side] if config.freeze_embeddings else []
    for module in modules + list(parts.layers[: config.num_frozen_layers]):
        for p in module.parameters():
            p.requires_grad = False
    if config.freeze_embeddings:
        for name in boundary_dependencies(model, parts, config.num_frozen_layers):
            model.get_parameter(name).requires_grad = False


class _RecordLoss:
    """Records every training micro-batch loss at full precision (Trainer's logs are rounded)."""

    recorded: list

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        out = super().compute_loss(model, inputs, return_outputs=return_outputs, num_items_in_batch=num_items_in_batch)
        if model.training:
            self.recorded.append((out[0] if return_outputs else out).detach().double().item())
        return out


class _ReferenceTrainer(_RecordLoss, Trainer):
    pass


class _FastFreezeArm(_RecordLoss, FastFreezeTrainer):
    pass


def _training_args(out_dir: str, steps: int, batch_size: int, grad_accum: int, lr: float, seed: int,
                   dtype: str, use_cpu: bool, optim: str) -> TrainingArguments:
    return TrainingArguments(optim=optim,
        output_dir=out_dir, max_steps=steps, per_device_train_batch_size=batch_size,
        gradient_accumulation_steps=grad_accum, learning_rate=lr, lr_scheduler_type="constant", weight_decay=0.0,
        seed=seed, data_seed=seed, bf16=dtype == "bf16", fp16=dtype == "fp16", use_cpu=use_cpu,
        save_strategy="no", eval_strategy="no", logging_strategy="no", report_to=[], disable_tqdm=True,
        dataloader_num_workers=0)


def _disable_dropout(model: nn.Module) -> int:
    """Zero every dropout probability. fastfreeze runs the frozen prefix in eval mode by design, where
    the seed recipe applies dropout there (and draws different random numbers for the suffix's masks),
    so parity is only defined without dropout. Returns how many were non-zero."""
    count = 0
    for m in model.modules():
        if isinstance(m, nn.Dropout) and m.p > 0:
            m.p, count = 0.0, count + 1
        for attr in ("attention_dropout", "dropout", "attn_dropout", "dropout_p"):
            value = m.__dict__.get(attr)
            if isinstance(value, float) and value > 0:
                setattr(m, attr, 0.0)
                count += 1
    return count


def _run_arm(name, model, rows, collator, freeze_config, targs, initial, device, keep_path=None):
    """Train one arm; returns (ArmResult, WeightStore of the trained parameters: the live tensors, or a
    CPU copy, or a file at `keep_path`)."""
    cuda = device.type == "cuda"
    model.to(device)  # before the trainer: fastfreeze picks kernels from where the model lives
    with PeakMemory(cuda) as mem:
        if name == "reference":
            reference_freeze(model, freeze_config)
            trainer = _ReferenceTrainer(model=model, args=targs, train_dataset=rows, data_collator=collator)
        else:
            trainer = _FastFreezeArm(model=model, args=targs, train_dataset=rows, data_collator=collator,
                                     freeze_config=freeze_config)
        timer = StepTimer(cuda)
        trainer.add_callback(timer)
        trainer.remove_callback(PrinterCallback)  # it prints Trainer's final metrics dict
        trainer.recorded = []
        trainer.train()
    params = dict(model.named_parameters(remove_duplicate=False))
    frozen = sorted(n for n, p in params.items() if not p.requires_grad)
    changed = [n for n in frozen if n in initial.names and not torch.equal(params[n].detach().cpu(), initial.get(n))]
    trained = [(n, p) for n, p in params.items() if p.requires_grad]
    # The fastfreeze arm runs last: its live tensors are compared as they are. The reference's are
    # kept on CPU (its copy is freed before the next arm) or, in sequential mode, on disk.
    trained = (WeightStore(trained) if name == "fastfreeze" else
               WeightStore(trained, path=keep_path, clone=keep_path is None))
    cache = None
    if name == "fastfreeze" and trainer.cache_summary() is not None:
        s = trainer.cache_summary()
        cache = {"hits": s.hits, "misses": s.misses, "entries": s.entries}
    runtime = getattr(trainer, "freeze_runtime", None)
    result = ArmResult(name=name, losses=list(trainer.recorded), step_seconds=timer.median(),
                       peak_memory_bytes=int(mem.peak), frozen=frozen, frozen_changed=changed,
                       kernel_set=runtime.kernel_set if runtime else "torch", cache=cache)
    del trainer
    return result, trained


# ---------------------------------------------------------------------------------------- verify()
def _infer_dtype(model: nn.Module) -> str:
    dt = next(model.parameters()).dtype
    if dt == torch.float16:
        raise VerifyError("the model's weights are fp16, which the loss scaler cannot train; load it in fp32 "
                          "and pass dtype='fp16' (fp16 autocast), or load bf16 weights.")
    return "bf16" if dt == torch.bfloat16 else "fp32"


def verify(model: nn.Module, dataset, freeze_config: FreezeConfig, steps: int = 8, *, dtype: str | None = None,
           batch_size: int = 4, grad_accum: int = 1, learning_rate: float = 1e-4, seed: int = 0,
           sequential: bool = False, data_collator=None, pad_token_id: int = 0, use_cpu: bool | None = None,
           tolerances: Tolerances | None = None, optim: str = "adamw_torch") -> VerifyReport:
    """Train `steps` optimizer steps with the seed recipe + Trainer and with FastFreezeTrainer from the
    same weights and seed, and compare losses, trained weights and frozen weights.

    `model` is left untouched (each arm trains a deep copy) unless `sequential=True`, which trains
    `model` itself, one arm after the other, restoring the initial weights from a temporary
    safetensors file in between (one copy in memory; `model` ends as the fastfreeze arm left it:
    trained, frozen, dropout off).
    `dataset`: rows with input_ids (+ labels, attention_mask). With a cache, `steps` covers two epochs
    of the rows used, so the second epoch's boundary states come from the cache. `dtype` defaults to
    the model's ("bf16" for bf16 weights); "fp16" means fp16 autocast over fp32 weights. `optim` is
    Trainer's optimizer name; Adam turns last-bit gradient noise in tensors whose true gradient is ~0
    (a zero-initialised key bias) into lr-sized steps, so a FAIL naming such a tensor is worth a rerun
    with optim="sgd", whose updates stay proportional to the gradients.

    Usage:
        report = verify(model, rows, FreezeConfig(num_frozen_layers=4), steps=8)
        print(report); assert report.passed
    """
    if not isinstance(freeze_config, FreezeConfig):
        raise VerifyError(f"freeze_config must be a fastfreeze.FreezeConfig, got {type(freeze_config).__name__}.")
    for label, value, low in (("steps", steps, 2 if freeze_config.cache else 1), ("batch_size", batch_size, 1),
                              ("grad_accum", grad_accum, 1)):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise VerifyError(f"{label}={value!r} must be an int >= {low}"
                              + (" (a cache needs two epochs)" if label == "steps" and low == 2 else "") + ".")
    from transformers.training_args import OptimizerNames

    if optim not in {o.value for o in OptimizerNames}:
        raise VerifyError(f"optim={optim!r} is not a Trainer optimizer; use e.g. 'adamw_torch' or 'sgd'.")
    dtype = dtype or _infer_dtype(model)
    tolerances = tolerances or Tolerances.for_dtype(dtype, steps)
    parts = resolve(model)
    freeze_config.validate_for(parts.num_layers)
    use_cpu = (not torch.cuda.is_available()) if use_cpu is None else use_cpu
    device = torch.device("cpu" if use_cpu else "cuda", 0 if not use_cpu else None)
    model_device = next(model.parameters()).device
    if not sequential and model_device.type == device.type:
        check_fits_twice(model, freeze_config, device)

    rows = as_dataset(dataset)
    rows = rows.select(range(min(len(rows), rows_needed(steps, batch_size, grad_accum, bool(freeze_config.cache)))))
    notes = []
    if data_collator is None:
        pad_to = None
        if freeze_config.cache:
            # Fixed width: a row's prefix output is then the same bits in every batch, so cache hits
            # (computed in an epoch-1 batch) match what the reference computes in epoch 2.
            pad_to = max(len(r) for r in rows["input_ids"])
            notes.append(f"cache on: rows padded to one width ({pad_to}) so cached rows are bit-comparable")
        data_collator = PaddingCollator(pad_token_id, pad_to=pad_to, labels_from_input_ids=True)
    if freeze_config.cache:
        notes.append(f"{len(rows)} rows over {steps} steps: steps beyond the first epoch read the cache")

    with tempfile.TemporaryDirectory(prefix="fastfreeze-verify-") as tmp:
        initial = WeightStore(model.named_parameters(remove_duplicate=False),
                              path=os.path.join(tmp, "initial.safetensors") if sequential else None)
        head_w = getattr(parts.head, "weight", None)
        tied = head_w is not None and any(head_w is getattr(m, "weight", None) for _, m in parts.embedding_side)
        arms, dropped = {}, 0
        for arm in ("reference", "fastfreeze"):
            if sequential and arm == "fastfreeze":
                initial.restore(model, (parts.head, head_w) if tied else None)
            arm_model = model if sequential else copy.deepcopy(model)
            dropped = max(dropped, _disable_dropout(arm_model))
            targs = _training_args(os.path.join(tmp, arm), steps, batch_size, grad_accum, learning_rate, seed,
                                   dtype, use_cpu, optim)
            keep = os.path.join(tmp, "reference-final.safetensors") if sequential else None
            arms[arm] = _run_arm(arm, arm_model, rows, data_collator, freeze_config, targs, initial, device, keep)
            del arm_model
            if arm == "reference":
                _release()  # drop the reference copy, its gradients and optimizer state before the next arm
        (ref, ref_final), (ff, ff_final) = arms["reference"], arms["fastfreeze"]
        worst, worst_name, failures = _compare(ref, ff, ref_final, ff_final, tolerances)
        if ref_final.names and all(torch.equal(ref_final.get(n), initial.get(n))
                                   for n in ref_final.names if n in initial.names):
            failures.append(f"nothing trained in the reference (learning rate {learning_rate:g} too small for "
                            f"{dtype} weights?): parity would be vacuous; raise --learning-rate")
    if sequential:
        notes.append("sequential: the arms ran one after the other from the initial weights saved to disk")
    if dropped:
        notes.append(f"dropout set to 0 in both arms ({dropped} modules): fastfreeze runs the frozen prefix in "
                     "eval mode by design, so only dropout-free training is comparable")
    return VerifyReport(
        model=f"{parts.family}, {parts.num_layers} layers", num_frozen_layers=freeze_config.num_frozen_layers,
        frozen_desc=("embedding + " if freeze_config.freeze_embeddings else "")
        + f"bottom {freeze_config.num_frozen_layers} layers",
        dtype=dtype, kernels=freeze_config.kernels, cache=freeze_config.cache, steps=steps, batch_size=batch_size,
        grad_accum=grad_accum, device=str(device), optim=optim, learning_rate=learning_rate,
        memory_kind="(CUDA allocated)" if device.type == "cuda" else "(RSS)",
        tolerances=tolerances, reference=ref, fastfreeze=ff, param_max_rel=worst, param_worst=worst_name,
        failures=failures, notes=notes)


def _release() -> None:
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def _compare(ref: ArmResult, ff: ArmResult, ref_final: WeightStore, ff_final: WeightStore, tol: Tolerances):
    failures = []
    if len(ref.losses) != len(ff.losses) or not ref.losses:
        failures.append(f"the arms ran {len(ref.losses)} and {len(ff.losses)} micro-batches")
    bad = [i for i, (a, b) in enumerate(zip(ref.losses, ff.losses)) if not _loss_ok(a, b, tol.loss_rtol)]
    if bad:
        failures.append(f"{len(bad)} of {len(ref.losses)} micro-batch losses differ by more than "
                        f"{tol.loss_rtol:.1e} relative (first: micro-batch {bad[0] + 1})")
    only_ref, only_ff = sorted(ref_final.names - ff_final.names), sorted(ff_final.names - ref_final.names)
    if only_ref or only_ff:
        failures.append(f"trainable parameters differ: only in the reference {only_ref[:4]}, "
                        f"only in fastfreeze {only_ff[:4]}")
    worst, worst_name = 0.0, "-"
    for name in sorted(ref_final.names & ff_final.names):
        a, b = ref_final.get(name).double(), ff_final.get(name).double()
        rel = ((b - a).abs().max() / a.abs().max().clamp_min(1e-30)).item()
        rel = rel if math.isfinite(rel) else float("inf")
        if rel > worst or worst_name == "-":
            worst, worst_name = rel, name
    if worst > tol.param_rtol:
        failures.append(f"trainable parameter {worst_name} differs by {worst:.2e} relative "
                        f"(tolerance {tol.param_rtol:.1e})")
    for arm in (ref, ff):
        if arm.frozen_changed:
            failures.append(f"{arm.name}: frozen parameters changed: {arm.frozen_changed[:4]}")
    if sorted(ref.frozen) != sorted(ff.frozen):
        failures.append("the arms froze different parameters: "
                        f"{sorted(set(ref.frozen) ^ set(ff.frozen))[:4]}")
    return worst, worst_name, failures


# ---------------------------------------------------------------------------------------- CLI
@dataclass
class VerifyArguments:
    """Options of `fastfreeze verify` (HfArgumentParser: `--num-frozen-layers` or `--num_frozen_layers`)."""

    model: str = field(metadata={"help": "local model directory (save_pretrained) or a Hub name in your HF cache"})
    data: str | None = field(default=None, metadata={
        "help": "save_to_disk directory or a .txt (one example per line), .json, .jsonl, .csv or .parquet file; "
                "default: built-in biographies"})
    num_frozen_layers: int | None = field(default=None, metadata={"help": "k (default: half the layers)"})
    steps: int = field(default=8, metadata={"help": "optimizer steps per arm"})
    dtype: str | None = field(default=None, metadata={
        "choices": ["fp32", "bf16", "fp16"], "help": "default: bf16 on a GPU, fp32 on CPU"})
    kernels: str = field(default="auto", metadata={"choices": ["auto", "triton", "torch"]})
    cache: str = field(default="none", metadata={"choices": ["none", "memory", "disk"]})
    cache_dir: str | None = field(default=None, metadata={
        "help": "directory of a disk cache (default with --cache disk: a temporary directory, removed at the end)"})
    sequential: bool = field(default=False, metadata={
        "help": "one model copy: run the arms one after the other from initial weights saved to a temp dir"})
    batch_size: int = 4
    grad_accum: int = 1
    max_length: int = field(default=256, metadata={"help": "tokens per row (longer rows are cut)"})
    block_size: int | None = field(default=None, metadata={
        "help": "tokenize the text, concatenate it and cut it into rows of exactly N tokens, as HF's run_clm.py "
                "does (instead of one row per example; --max-length then does not apply)"})
    learning_rate: float = 1e-4
    optim: str = field(default="adamw_torch", metadata={
        "help": "Trainer optimizer; 'sgd' keeps updates proportional to gradients (see docs)"})
    seed: int = 0
    split: str = field(default="train", metadata={"help": "split of a save_to_disk DatasetDict"})
    text_column: str | None = field(default=None, metadata={"help": "default: 'text' when present"})
    prompt_column: str | None = field(default=None, metadata={"help": "default: 'prompt' (loss not on it)"})
    completion_column: str | None = field(default=None, metadata={"help": "default: 'completion' (loss on it)"})
    freeze_embeddings: bool = True
    untie_embeddings: bool = False
    report_json: str | None = field(default=None, metadata={"help": "also write the report as JSON here"})


def main(argv: list[str] | None = None) -> int:
    """`fastfreeze verify ...`: 0 on PASS, 1 on FAIL, 2 on bad input.

    Usage: fastfreeze verify --model runs/base --data train.jsonl --num-frozen-layers 4
    """

    from transformers import HfArgumentParser

    from .verify_data import load_model_and_tokenizer, load_rows, pad_token_id

    parser = HfArgumentParser(VerifyArguments, prog="fastfreeze verify", description=__doc__.splitlines()[0])
    try:
        (a,) = parser.parse_args_into_dataclasses(args=list(sys.argv[1:] if argv is None else argv))
    except SystemExit as e:  # argparse: --help (0) or a usage error (2)
        return int(e.code or 0)
    except ValueError as e:  # HfArgumentParser: arguments it does not know
        print(f"fastfreeze verify: {e}; see `fastfreeze verify --help`.", file=sys.stderr)
        return 2
    cuda = torch.cuda.is_available()
    dtype = a.dtype or ("bf16" if cuda else "fp32")
    temp_cache = None
    try:
        if a.cache == "disk" and not a.cache_dir:
            temp_cache = tempfile.mkdtemp(prefix="fastfreeze-verify-cache-")
        # Validate the knobs before loading a possibly large model; k is settled once the depth is known.
        config = FreezeConfig(num_frozen_layers=a.num_frozen_layers or 0, freeze_embeddings=a.freeze_embeddings,
                              untie_embeddings=a.untie_embeddings, kernels=a.kernels,
                              cache=None if a.cache == "none" else a.cache, cache_dir=a.cache_dir or temp_cache)
        if a.block_size is not None and a.block_size < 2:
            raise VerifyError(f"--block-size {a.block_size} must be >= 2 (a row needs a next token to predict).")
        model, tokenizer = load_model_and_tokenizer(a.model, dtype)
        if a.num_frozen_layers is None:
            config = dataclasses.replace(config, num_frozen_layers=resolve(model).num_layers // 2)
        if cuda:
            model.to("cuda")
        limit = rows_needed(a.steps, a.batch_size, a.grad_accum, config.cache is not None)
        rows = load_rows(a.data, tokenizer, a.max_length, limit, a.split, a.text_column, a.prompt_column,
                         a.completion_column, block_size=a.block_size)
        report = verify(model, rows, config, a.steps, dtype=dtype, batch_size=a.batch_size, grad_accum=a.grad_accum,
                        learning_rate=a.learning_rate, seed=a.seed, sequential=a.sequential, optim=a.optim,
                        pad_token_id=pad_token_id(tokenizer), use_cpu=not cuda)
    except (VerifyError, FreezeConfigError, UnsupportedModelError) as e:
        print(f"fastfreeze verify: {e}", file=sys.stderr)
        return 2
    finally:
        if temp_cache is not None:
            shutil.rmtree(temp_cache, ignore_errors=True)
    if a.block_size is not None:
        report.notes.append(f"data: text concatenated and cut into blocks of {a.block_size} tokens (--block-size)")
    if temp_cache is not None:
        report.notes.append(f"disk cache in a temporary directory ({temp_cache}), removed at the end")
    print(report)
    if a.report_json:
        _io.write_json(a.report_json, report.to_dict(), indent=2)
    return 0 if report.passed else 1
