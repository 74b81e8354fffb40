"""apply_freeze: freeze (at construction) -> kernels -> prefix -> probe (where the model trains), on one model instance.

Two phases, because a trainer gets the model before it is where it will train:

1. `prepare_freeze` (at construction, any device, `meta` included): resolve the family, validate the
   config, set `requires_grad` (the optimizer is built from it). Needs no weight values.
2. `complete_freeze` (once the weights are real and on the device they train on): the kernel set
   (a function of that device), the kernel swaps, the prefix and its trace, the probe. A trainer
   calls it after `Trainer` placed the model, or after accelerate wrapped and materialized it
   (FSDP RAM-efficient loading, DeepSpeed), see `FreezeMixin`.

`apply_freeze` runs both at once on the model where it is (the model must be where it trains).

A refusal or an error in either phase leaves the model as it came: `FreezeRuntime.teardown` undoes the
run (kernels, prefix, stand-ins, modes through the patch record of `fastfreeze._patch`; `requires_grad`
and an untied head from what `prepare_freeze` recorded), and every set-up path runs it on the way out.
"""
from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass, field

import torch
from torch import nn

from ._hf_compat import hub_kernels_off, hub_kernels_on, text_config, zero3_engine_hooks, zero3_partitioned
from .errors import UnsupportedModelError, meta_weights_refusal
from .families import ModelParts, is_peft_model, resolve
from .adapters import base_model_for_freeze
from .config import FreezeConfig
from .freeze import FreezeReport, freeze_by_config, head_is_tied
from .kernels import choose_kernel_set, install_kernels, remove_kernels, switched_off
from .prefix import FrozenPrefix
from .probe import ProbeReport, probe_fast_path

logger = logging.getLogger(__name__)


@dataclass
class _Before:
    """What `prepare_freeze` changes that the patch record cannot hold (a tensor flag, a parameter slot,
    a config field), as it was: `requires_grad` by parameter name, whether the head was tied, the tie flags.
    By name and by tie, not by tensor: FSDP2 may have replaced the parameters by the time of a refusal."""

    requires_grad: dict[str, bool]
    tied: bool
    ties: list = field(default_factory=list)  # (config, tie_word_embeddings)

    @classmethod
    def record(cls, target: nn.Module, parts: ModelParts) -> "_Before":
        configs = {id(c): c for c in (target.config, text_config(target.config))}.values() \
            if hasattr(target, "config") else []
        return cls({n: p.requires_grad for n, p in target.named_parameters()}, head_is_tied(parts),
                   [(c, c.tie_word_embeddings) for c in configs if hasattr(c, "tie_word_embeddings")])

    def restore(self, target: nn.Module, parts: ModelParts) -> None:
        if self.tied and not head_is_tied(parts):  # untie_embeddings gave the head its own copy
            parts.head.weight = parts.embedding_side[0][1].weight
        for config, tie in self.ties:
            config.tie_word_embeddings = tie
        for name, p in target.named_parameters():
            if name in self.requires_grad:
                p.requires_grad_(self.requires_grad[name])


@dataclass
class FreezeRuntime:
    """Everything `apply_freeze` set up on one model."""

    config: FreezeConfig
    parts: ModelParts
    report: FreezeReport
    prefix: FrozenPrefix | None  # None when the frozen blocks are not a prefix, or before complete_freeze
    kernel_set: str = "torch"  # which implementation the modules run: "torch" or "triton"
    probe: ProbeReport | None = None  # the install-time check (None with FreezeConfig(probe=False))
    target: nn.Module | None = None  # the transformers model that is split (a PEFT model's base model)
    weights_device: torch.device | None = None  # where the weights were when complete_freeze ran (kernels chose for the training device)
    completed: bool = False  # complete_freeze ran: kernels, prefix and probe are in place
    before: _Before | None = None  # the model before prepare_freeze (teardown restores it)
    hub_kernels_mode: object = None  # transformers' hub-kernel mode the Triton kernels turned off (teardown restores it)

    def teardown(self) -> None:
        """Undo this run on the model: the prefix (its forwards, stand-ins, modes, input-require-grads
        hooks), the kernels, then the freeze (`requires_grad`, an untied head). The model is then as it
        came to `prepare_freeze`. Runs on every refusal and error of the set-up (`undo_on_error`).

        Usage:
            runtime.teardown()
        """
        if self.prefix is not None:
            self.prefix.remove()
        remove_kernels(self.target)
        hub_kernels_on(self.target, self.hub_kernels_mode)
        self.hub_kernels_mode = None
        if self.before is not None:
            self.before.restore(self.target, self.parts)
        self.prefix, self.probe, self.completed = None, None, False

    @property
    def cache_refusal(self) -> str | None:
        """Why the prefix cache cannot serve this model (None: it can, or it was not probed)."""
        return self.probe.cache_refusal if self.probe else None


def parameter_device(model: nn.Module) -> torch.device:
    """Where the model's weights are: the device of its first parameter (`meta` if any is on meta)."""
    devices = {p.device for p in model.parameters()}
    meta = torch.device("meta")
    return meta if meta in devices else next(iter(model.parameters())).device


def zero3_state(model: nn.Module) -> str | None:
    """None for a model DeepSpeed ZeRO-3 has not partitioned; "engine" when a ZeRO-3 engine hooked it
    (it gathers each module's weights around every call); "at load" when zero.Init partitioned it and
    no engine runs it yet (each rank holds empty placeholders)."""
    if not any(zero3_partitioned(p) for p in model.parameters()):
        return None
    return "engine" if zero3_engine_hooks(model) else "at load"


ZERO3_AT_LOAD_NOTE = ("DeepSpeed ZeRO-3 partitioned the weights at load: frozen by module name, parameter "
                      "counts from ds_numel, the boundary's dependencies traced with each module's weights "
                      "gathered only during its own forward")
ZERO3_ENGINE_NOTE = ("DeepSpeed ZeRO-3: prefix trace and probe ran at train start under the engine, which "
                     "gathers each module's weights around its call and releases them after (never the whole prefix)")
HUB_KERNELS_NOTE = ("transformers' hub kernels (use_kernels, on by default in from_pretrained when the `kernels` "
                    "package is installed) turned off on this model: each train()/eval() would re-kernelize and "
                    "reset the Triton RMSNorm forwards (restored if the set-up is undone)")
ZERO3_KERNELS_NOTE = ("DeepSpeed ZeRO-3: the Triton kernels' install check gathered each module it checked, one at "
                      "a time on every rank; in training each kernel runs inside its module's forward, where the "
                      "engine has gathered the weights (the fused loss, read after the LM head ran, gets the head's "
                      "weight through DeepSpeed's discovery of external parameters)")


@contextlib.contextmanager
def undo_on_error(runtime: FreezeRuntime | None):
    """Within this block, any exception (a refusal included) first tears `runtime` down (a failure of the
    teardown itself is added to the exception as a note, never raised instead of it).

    Usage: ``with undo_on_error(runtime): complete_freeze(runtime)``
    """
    try:
        yield
    except BaseException as err:
        if runtime is not None:
            try:
                runtime.teardown()
            except Exception as undo:  # noqa: BLE001 - the original error is the one to report
                err.add_note(f"fastfreeze could not restore the model after this error: {undo!r}")
        raise


def prepare_freeze(model: nn.Module, config: FreezeConfig) -> FreezeRuntime:
    """Phase 1: validate `config` against `model` and freeze by module index (no forward, no weight
    values read: works on `meta`). `complete_freeze` does the rest where the model trains.

    Usage:
        runtime = prepare_freeze(model, FreezeConfig(num_frozen_layers=4))
    """
    # A PEFT wrapper: the split is made on the wrapped transformers model; adapters must sit in the
    # trainable suffix, and the base weights stay frozen (PEFT decides what trains).
    target = base_model_for_freeze(model, config) if is_peft_model(model) else model
    parts = resolve(target)
    before = _Before.record(target, parts)
    try:
        report = freeze_by_config(target, config, parts=parts)  # checks k against the depth (the one check left)
    except BaseException:
        before.restore(target, parts)
        raise
    if zero3_state(target) == "at load":
        report.notes.append(ZERO3_AT_LOAD_NOTE)
    return FreezeRuntime(config=config, parts=parts, report=report, prefix=None, target=target, before=before)


def complete_freeze(runtime: FreezeRuntime, device: torch.device | None = None) -> FreezeRuntime:
    """Phase 2, on the model as it trains: choose the kernel set for `device` (default: where the
    weights are) and install it, then the no-grad prefix (trace) and the probe. Runs once.

    Usage:
        complete_freeze(runtime, trainer.args.device)
    """
    if runtime.completed:
        return runtime
    with undo_on_error(runtime):
        _complete(runtime, device)
    return runtime


def _complete(runtime: FreezeRuntime, device: torch.device | None) -> None:
    target, config, parts, report = runtime.target, runtime.config, runtime.parts, runtime.report
    zero3 = zero3_state(target)
    if zero3 == "at load":
        raise UnsupportedModelError(
            f"{type(target).__name__}: DeepSpeed ZeRO-3 partitioned the weights at load and no engine runs them yet, "
            "so the prefix cannot run here. Train it through FastFreezeTrainer / FastFreezeSFTTrainer with "
            "TrainingArguments(deepspeed=...): the freeze completes at train start, under the engine.")
    where = parameter_device(target)
    if where.type == "meta":
        raise UnsupportedModelError(meta_weights_refusal(target, "still on the meta device where fastfreeze must run them"))
    device = torch.device(device) if device is not None else where
    kernel_set, reason = choose_kernel_set(config.kernels, target, device=device)
    report.kernel_set, report.device = kernel_set, str(where)
    if reason:
        report.notes.append(reason)
        logger.warning("fastfreeze: %s", reason)
    if kernel_set == "triton":
        runtime.hub_kernels_mode = hub_kernels_off(target)
        if runtime.hub_kernels_mode is not None:
            report.notes.append(HUB_KERNELS_NOTE)
        report.notes.append(str(install_kernels(target, parts, config.num_frozen_layers, fused_loss=config.fused_loss,
                                                skip=switched_off(config))))
        if zero3 == "engine":
            report.notes.append(ZERO3_KERNELS_NOTE)
    runtime.kernel_set, runtime.weights_device = kernel_set, where
    if zero3 == "engine":
        report.notes.append(ZERO3_ENGINE_NOTE)
    if config.is_prefix:
        _install_prefix(runtime)
    else:
        report.notes.append("freeze_embeddings=False: frozen blocks sit above a trainable embedding, "
                            "so they run with autograd (no prefix fast path, no cache)")
    runtime.completed = True


def _install_prefix(runtime: FreezeRuntime) -> None:
    """The prefix, then the probe; a refusal propagates (complete_freeze tears the run down)."""
    target, config = runtime.target, runtime.config
    runtime.prefix = FrozenPrefix(target, runtime.parts, config.num_frozen_layers)  # before install: teardown sees it
    runtime.prefix.install()
    if not config.probe:
        return
    probe = runtime.probe = probe_fast_path(target, runtime.prefix, config.allow_eval_prefix)
    runtime.report.notes.append(str(probe))
    if config.cache and probe.cache_refusal:
        raise UnsupportedModelError(
            f"{type(target).__name__}: prefix cache refused: {probe.cache_refusal}. The fast path without a "
            "cache is exact for this model: use FreezeConfig(cache=None)."
        )


def apply_freeze(model: nn.Module, config: FreezeConfig, device: torch.device | None = None) -> FreezeRuntime:
    """Validate `config` against `model`, freeze by module index, and install the no-grad prefix, on
    the model where it is (which must be where it trains: move it first). Trainers use the two
    phases (`prepare_freeze`, `complete_freeze`) instead, see the module docstring.

    Usage:
        runtime = apply_freeze(model, FreezeConfig(num_frozen_layers=4)); print(runtime.report)
    """
    return complete_freeze(prepare_freeze(model, config), device)
