"""`verify`: train a few steps with the plain freeze recipe and with FastFreezeTrainer, and compare.

Both arms start from the same weights, data order and seed. The reference is the recipe people run
today: `requires_grad=False` on the embedding side and blocks[:k] (located with `fastfreeze.families`,
not frozen by fastfreeze's code) + a plain `transformers.Trainer`. The other arm is
FastFreezeTrainer with the chosen kernels and cache. The report compares every micro-batch loss,
the trained parameters, and checks that frozen parameters are bitwise unchanged in both arms.

Usage:
    report = verify(model, rows, FreezeConfig(num_frozen_layers=6), steps=8); print(report)
    fastfreeze verify --model path/to/model --data train.jsonl --num-frozen-layers 6   (fastfreeze.cli.verify)
"""
from __future__ import annotations

import copy
import gc
import math
import os
import tempfile
from dataclasses import dataclass

import torch
from torch import nn
from transformers import PrinterCallback, Trainer, TrainingArguments

from .._hf_compat import optimizer_names
from ..config import FreezeConfig
from ..data.collate import PaddingCollator
from ..families import resolve
from ..freeze import boundary_dependencies
from ..trainer import FastFreezeTrainer
from .inputs import as_dataset, rows_needed
from .measure import PeakMemory, StepTimer, WeightStore, check_fits_twice
from .report import ArmResult, Tolerances, VerifyError, VerifyReport, loss_ok

__all__ = ["reference_freeze", "verify"]


def reference_freeze(model: nn.Module, config: FreezeConfig) -> None:
    """The seed recipe, generically: requires_grad=False on the embedding-side modules and blocks[:k]
    (never True on anything: what the model keeps frozen stays frozen); plus the parameters the boundary
    depends on, which the rule in docs/models.md freezes and FreezeReport states (e.g. bare scales on the base
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
    _check_arguments(freeze_config, steps, batch_size, grad_accum, optim)
    dtype = dtype or _infer_dtype(model)
    tolerances = tolerances or Tolerances.for_dtype(dtype, steps)
    parts = resolve(model)
    freeze_config.validate_for(parts.num_layers)
    use_cpu = (not torch.cuda.is_available()) if use_cpu is None else use_cpu
    plan = _Plan(steps, batch_size, grad_accum, learning_rate, seed, dtype, use_cpu, optim, sequential,
                 torch.device("cpu" if use_cpu else "cuda", 0 if not use_cpu else None))
    if not sequential and next(model.parameters()).device.type == plan.device.type:
        check_fits_twice(model, freeze_config, plan.device)
    notes: list[str] = []
    rows, data_collator = _rows_and_collator(dataset, freeze_config, plan, data_collator, pad_token_id, notes)
    (ref, ff), worst, worst_name, failures, dropped = _run_and_compare(
        model, parts, rows, data_collator, freeze_config, plan, tolerances)
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
        grad_accum=grad_accum, device=str(plan.device), optim=optim, learning_rate=learning_rate,
        memory_kind="(CUDA allocated)" if plan.device.type == "cuda" else "(RSS)",
        tolerances=tolerances, reference=ref, fastfreeze=ff, param_max_rel=worst, param_worst=worst_name,
        failures=failures, notes=notes)


@dataclass(frozen=True)
class _Plan:
    """How both arms train (the same for both)."""

    steps: int
    batch_size: int
    grad_accum: int
    learning_rate: float
    seed: int
    dtype: str
    use_cpu: bool
    optim: str
    sequential: bool
    device: torch.device

    def training_args(self, out_dir: str) -> TrainingArguments:
        return _training_args(out_dir, self.steps, self.batch_size, self.grad_accum, self.learning_rate, self.seed,
                              self.dtype, self.use_cpu, self.optim)


def _check_arguments(freeze_config, steps, batch_size, grad_accum, optim) -> None:
    if not isinstance(freeze_config, FreezeConfig):
        raise VerifyError(f"freeze_config must be a fastfreeze.FreezeConfig, got {type(freeze_config).__name__}.")
    for label, value, low in (("steps", steps, 2 if freeze_config.cache else 1), ("batch_size", batch_size, 1),
                              ("grad_accum", grad_accum, 1)):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise VerifyError(f"{label}={value!r} must be an int >= {low}"
                              + (" (a cache needs two epochs)" if label == "steps" and low == 2 else "") + ".")
    names = optimizer_names()
    if names is not None and optim not in names:
        raise VerifyError(f"optim={optim!r} is not a Trainer optimizer; use e.g. 'adamw_torch' or 'sgd'.")


def _rows_and_collator(dataset, freeze_config: FreezeConfig, plan: _Plan, data_collator, pad_token_id: int,
                       notes: list[str]):
    """The rows both arms train on (as many as the steps consume) and their collator."""
    rows = as_dataset(dataset)
    needed = rows_needed(plan.steps, plan.batch_size, plan.grad_accum, bool(freeze_config.cache))
    rows = rows.select(range(min(len(rows), needed)))
    if data_collator is None:
        pad_to = None
        if freeze_config.cache:
            # Fixed width: a row's prefix output is then the same bits in every batch, so cache hits
            # (computed in an epoch-1 batch) match what the reference computes in epoch 2.
            pad_to = max(len(r) for r in rows["input_ids"])
            notes.append(f"cache on: rows padded to one width ({pad_to}) so cached rows are bit-comparable")
        data_collator = PaddingCollator(pad_token_id, pad_to=pad_to, labels_from_input_ids=True)
    if freeze_config.cache:
        notes.append(f"{len(rows)} rows over {plan.steps} steps: steps beyond the first epoch read the cache")
    return rows, data_collator


def _run_and_compare(model, parts, rows, data_collator, freeze_config: FreezeConfig, plan: _Plan,
                     tolerances: Tolerances):
    """Train the reference, then the fastfreeze arm, from the same initial weights; compare them.
    Returns ((reference, fastfreeze), worst relative difference, its parameter, failures, dropouts zeroed)."""
    with tempfile.TemporaryDirectory(prefix="fastfreeze-verify-") as tmp:
        initial = WeightStore(model.named_parameters(remove_duplicate=False),
                              path=os.path.join(tmp, "initial.safetensors") if plan.sequential else None)
        head_w = getattr(parts.head, "weight", None)
        tied = head_w is not None and any(head_w is getattr(m, "weight", None) for _, m in parts.embedding_side)
        arms, dropped = {}, 0
        for arm in ("reference", "fastfreeze"):
            if plan.sequential and arm == "fastfreeze":
                initial.restore(model, (parts.head, head_w) if tied else None)
            arm_model = model if plan.sequential else copy.deepcopy(model)
            dropped = max(dropped, _disable_dropout(arm_model))
            keep = os.path.join(tmp, "reference-final.safetensors") if plan.sequential else None
            arms[arm] = _run_arm(arm, arm_model, rows, data_collator, freeze_config,
                                 plan.training_args(os.path.join(tmp, arm)), initial, plan.device, keep)
            del arm_model
            if arm == "reference":
                _release()  # drop the reference copy, its gradients and optimizer state before the next arm
        (ref, ref_final), (ff, ff_final) = arms["reference"], arms["fastfreeze"]
        worst, worst_name, failures = _compare(ref, ff, ref_final, ff_final, tolerances)
        if ref_final.names and all(torch.equal(ref_final.get(n), initial.get(n))
                                   for n in ref_final.names if n in initial.names):
            failures.append(f"nothing trained in the reference (learning rate {plan.learning_rate:g} too small for "
                            f"{plan.dtype} weights?): parity would be vacuous; raise --learning-rate")
    return (ref, ff), worst, worst_name, failures, dropped


def _release() -> None:
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def _compare(ref: ArmResult, ff: ArmResult, ref_final: WeightStore, ff_final: WeightStore, tol: Tolerances):
    failures = []
    if len(ref.losses) != len(ff.losses) or not ref.losses:
        failures.append(f"the arms ran {len(ref.losses)} and {len(ff.losses)} micro-batches")
    bad = [i for i, (a, b) in enumerate(zip(ref.losses, ff.losses)) if not loss_ok(a, b, tol.loss_rtol)]
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
