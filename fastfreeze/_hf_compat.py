"""Every access to private or version-dependent internals of transformers, TRL, PEFT, torch and triton, one shim each.

fastfreeze supports transformers 5.17 to 5.25 (and TRL / PEFT as they come); each name below is
checked against the installed versions by tests/test_hf_compat.py, so a release that moves one
fails there, loudly, with the shim's name, instead of somewhere deep in a training run.

The benchmarks use the torch dispatch / pytree and triton compiler shims at the end (memtrack, the AOT
check); they sit here so that one test file watches every internal the project touches.

Long because it is the one place for every dependency internal (transformers, TRL, PEFT, DeepSpeed, torch,
triton): one short shim each, and splitting it by dependency would scatter what a release can break.

Usage:
    class FreezeMixin(TrainerHooks): ...           # Trainer's private `_save` / `_prepare_inputs`
    uses_reentrant_checkpointing(block); remove_unused_columns(trainer, ds, "prefix cache")
"""
from __future__ import annotations

import contextlib
import dataclasses
import functools
import inspect
import os
import sys
from typing import Any, Callable

import torch
import transformers
from torch import nn
from transformers import TrainingArguments

import datasets
from datasets.fingerprint import Hasher
from torch.utils._python_dispatch import TorchDispatchMode  # torch has no public path to it
from torch.utils._pytree import tree_leaves as _tree_leaves
from transformers.trainer_utils import get_last_checkpoint

try:  # internal module paths: a release that moves one breaks only the feature that needs it
    from transformers.loss.loss_utils import ForCausalLMLoss
except ImportError:  # pragma: no cover - checked by tests/test_hf_compat.py
    ForCausalLMLoss = None
try:
    from transformers.pytorch_utils import Conv1D
except ImportError:  # pragma: no cover
    Conv1D = None
try:
    from transformers.training_args import OptimizerNames
except ImportError:  # pragma: no cover
    OptimizerNames = None
try:
    from datasets.table import InMemoryTable
except ImportError:  # pragma: no cover
    InMemoryTable = None
try:
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES
except ImportError:  # pragma: no cover
    MODEL_FOR_CAUSAL_LM_MAPPING_NAMES = None


# ------------------------------------------------------------------------------ DeepSpeed ZeRO-3
# zero.Init (from_pretrained under a ZeRO-3 config) replaces each parameter's data by an empty
# placeholder and marks it: `ds_id`, `ds_shape` / `ds_numel` (the full shape), `ds_status`. The
# engine (deepspeed.initialize) then gathers each module's own parameters around its forward and
# backward through hooks, and leaves `ds_recompute_parameters` on every module it hooked.
def zero3_partitioned(p: torch.Tensor) -> bool:
    """Whether `p` is a DeepSpeed ZeRO-3 parameter (its data may be an empty placeholder)."""
    return hasattr(p, "ds_id")


def full_numel(p: torch.Tensor) -> int:
    """The element count of the whole parameter, also for a ZeRO-3 placeholder."""
    return int(p.ds_numel) if hasattr(p, "ds_numel") else p.numel()


def full_shape(p: torch.Tensor) -> torch.Size:
    """The shape of the whole parameter, also for a ZeRO-3 placeholder (whose own shape is [0])."""
    return torch.Size(p.ds_shape) if hasattr(p, "ds_shape") else p.shape


def zero3_engine_hooks(model: nn.Module) -> bool:
    """Whether a DeepSpeed ZeRO-3 engine hooked `model`'s modules (it gathers their weights per call)."""
    return any(hasattr(m, "ds_recompute_parameters") for m in model.modules())


@contextlib.contextmanager
def zero3_gathered(params):
    """Within this block the ZeRO-3 parameters among `params` hold their full data (a collective:
    every rank enters with the same list); partitioned again on exit. A no-op for other tensors."""
    params = [p for p in params if zero3_partitioned(p)]
    if not params:
        yield
        return
    import deepspeed  # optional dependency: present wherever a parameter is a ZeRO-3 one

    with deepspeed.zero.GatheredParameters(params):
        yield


@contextlib.contextmanager
def zero3_gathered_per_module(model: nn.Module):
    """Forwards of `model` inside this block gather each module's own ZeRO-3 parameters just before
    its forward and release them right after, as the engine's hooks do, so no more than one module's
    weights are ever whole (forward only: a backward would find them released). Modules left
    mid-forward (an early stop raised inside) are released on exit. A no-op under a ZeRO-3 engine,
    whose own hooks gather."""
    handles, open_ = [], []
    if zero3_engine_hooks(model):
        yield
        return

    def pre(module, args):
        ctx = zero3_gathered(module.parameters(recurse=False))
        ctx.__enter__()
        open_.append(ctx)

    def post(module, args, output):
        open_.pop().__exit__(None, None, None)

    for m in model.modules():
        if any(zero3_partitioned(p) for p in m.parameters(recurse=False)):
            handles += [m.register_forward_pre_hook(pre), m.register_forward_hook(post)]
    try:
        yield
    finally:
        for h in handles:
            h.remove()
        while open_:
            open_.pop().__exit__(None, None, None)


# ------------------------------------------------------------------------------ transformers hub kernels
# transformers >= 5.2x with the `kernels` package installed: `from_pretrained` turns hub kernelization on
# (`use_kernels=True` unless USE_HUB_KERNELS disables it), and every later train()/eval() that changes the
# mode re-kernelizes, which sets the forward of each module decorated with `use_kernel_forward_from_hub`
# (e.g. LlamaRMSNorm) again: a hub kernel's, or the class's own (`module.__dict__.pop("forward")`),
# silently dropping a per-instance forward such as fastfreeze's Triton RMSNorm at Trainer's first train().
def hub_kernels_off(model: nn.Module) -> Any:
    """Turn transformers' hub kernelization off on `model` (its decorated modules get their torch forward, and
    train()/eval() no longer re-kernelize). Returns the mode to give back to `hub_kernels_on` (None: it was off)."""
    if not getattr(model, "use_kernels", False):
        return None
    mode = model.kernels_mode
    model.use_kernels = False  # transformers' reset_kernels(): the torch forwards, no mode tracking
    return mode


def hub_kernels_on(model: nn.Module, mode: Any) -> None:
    """Undo `hub_kernels_off` (a no-op for None)."""
    if mode is not None:
        model.set_use_kernels(True, mode=mode)


# ------------------------------------------------------------------------------ transformers config / model
def text_config(config: Any) -> Any:
    """The text part of a (possibly multimodal) config; the config itself before `get_text_config` existed."""
    get = getattr(config, "get_text_config", None)
    return get() if callable(get) else config


def attn_implementation(config: Any) -> str:
    """The attention kernel a model runs (`config._attn_implementation`: "eager", "sdpa", ...)."""
    return str(getattr(config, "_attn_implementation", None))


def set_attn_implementation(model: nn.Module, attn: str) -> None:
    """Switch a model's attention kernel ("eager", "sdpa", ...): the model's public
    `set_attn_implementation` where this transformers has it, else the config attribute it reads."""
    setter = getattr(model, "set_attn_implementation", None)
    if callable(setter):
        setter(attn)
    else:  # pragma: no cover - transformers without the setter
        model.config._attn_implementation = attn


def set_config_attn_implementation(config: Any, attn: str) -> None:
    """Set the attention kernel on a config (and its sub-configs), for a model built from it or one whose
    attention cannot be switched after construction: the config property transformers' own
    `attn_implementation=` argument sets. Usage: set_config_attn_implementation(cfg, "eager")."""
    config._attn_implementation = attn


def causal_lm_model_types() -> list[str]:
    """Every model type the installed transformers registers for AutoModelForCausalLM, sorted; from the
    public lazy mapping's config classes where a release moves the name table."""
    if MODEL_FOR_CAUSAL_LM_MAPPING_NAMES is not None:
        return sorted(MODEL_FOR_CAUSAL_LM_MAPPING_NAMES)
    return sorted({cfg.model_type for cfg in transformers.MODEL_FOR_CAUSAL_LM_MAPPING.keys()})  # pragma: no cover


def is_quantized(model: nn.Module) -> bool:
    """Whether `from_pretrained` loaded `model` with a quantizer (bitsandbytes, GPTQ, ...)."""
    return bool(getattr(model, "is_quantized", False)) or getattr(model, "hf_quantizer", None) is not None


def causal_lm_loss() -> Callable | None:
    """transformers' causal-LM loss function (`model.loss_function` of a plain *ForCausalLM); None if
    this transformers has moved it (the fused loss then stays off)."""
    return ForCausalLMLoss


def linear_types() -> tuple[type, ...]:
    """The module types PEFT's "all-linear" targets: nn.Linear and GPT-2's `Conv1D`."""
    return (nn.Linear,) if Conv1D is None else (nn.Linear, Conv1D)


def input_require_grads_enabled(model: nn.Module) -> bool:
    """Whether `model.enable_input_require_grads()` is in effect: transformers keeps its hook handles as
    `_require_grads_hooks` (a list; 5.17: one handle, `_require_grads_hook`)."""
    return bool(getattr(model, "_require_grads_hooks", None)) or hasattr(model, "_require_grads_hook")


def uses_reentrant_checkpointing(module: nn.Module | None) -> bool:
    """Whether `module` (a decoder block) is activation-checkpointed with reentrant checkpointing.
    transformers stores the checkpoint function as `module._gradient_checkpointing_func`, a
    functools.partial whose keywords carry `use_reentrant` (default True)."""
    if module is None or not getattr(module, "gradient_checkpointing", False):
        return False
    fn = getattr(module, "_gradient_checkpointing_func", None)
    keywords = getattr(fn, "keywords", None) or {}
    return bool(keywords.get("use_reentrant", True))


# ------------------------------------------------------------------------------ transformers Trainer
class TrainerHooks:
    """The private `Trainer` methods fastfreeze overrides, here and nowhere else. Subclasses (FreezeMixin)
    implement two public hooks instead:

    - `save_freeze_config(output_dir)`: after `Trainer._save`, which every save path (checkpoints,
      `save_model`) goes through to write the model;
    - `prepare_batch(inputs, prepare)`: around `Trainer._prepare_inputs`, which moves a batch to the
      device in `training_step` and `prediction_step`; `prepare(inputs)` is Trainer's own.
    """

    def _save(self, output_dir: str | None = None, state_dict=None):
        super()._save(output_dir, state_dict=state_dict)
        self.save_freeze_config(output_dir if output_dir is not None else self.args.output_dir)

    def _prepare_inputs(self, inputs):
        return self.prepare_batch(inputs, super()._prepare_inputs)


def last_checkpoint(output_dir: str) -> str | None:
    """The newest `checkpoint-N` folder Trainer wrote under `output_dir` (None if there is none), as
    `resume_from_checkpoint=True` finds it."""
    return get_last_checkpoint(output_dir)


def remove_unused_columns(trainer: Any, dataset: Any, description: str) -> Any:
    """`dataset` with only the columns the model's forward takes, as Trainer's DataLoaders see it."""
    return trainer._remove_unused_columns(dataset, description=description)


def training_argument_names() -> set[str]:
    """Every `TrainingArguments` field name, plus `warmup_ratio` (accepted everywhere, see below)."""
    return {f.name for f in dataclasses.fields(TrainingArguments)} | {"warmup_ratio"}


def adapt_training_kwargs(kwargs: dict) -> dict:
    """TrainingArguments kwargs for the installed transformers: versions >= 5 folded `warmup_ratio` into
    `warmup_steps` (a float < 1 is a ratio)."""
    out = dict(kwargs)
    if "warmup_ratio" in out and "warmup_ratio" not in {f.name for f in dataclasses.fields(TrainingArguments)}:
        out["warmup_steps"] = float(out.pop("warmup_ratio"))
    return out


def checkpointing_training_kwargs(enabled: bool, use_reentrant: bool | None = None) -> dict:
    """TrainingArguments kwargs that turn activation checkpointing on or off (and pick reentrant or not):
    transformers 5.24 names them `activation_checkpointing(_kwargs)`, 5.17 `gradient_checkpointing(_kwargs)`."""
    names = {f.name for f in dataclasses.fields(TrainingArguments)}
    prefix = "activation_checkpointing" if "activation_checkpointing" in names else "gradient_checkpointing"
    out: dict = {prefix: enabled}
    if use_reentrant is not None:
        out[f"{prefix}_kwargs"] = {"use_reentrant": use_reentrant}
    return out


def optimizer_names() -> set[str] | None:
    """The optimizer names Trainer accepts (`--optim`); None when this transformers does not list them."""
    return None if OptimizerNames is None else {o.value for o in OptimizerNames}


# ------------------------------------------------------------------------------ torch
def compile_events() -> int:
    """How many frames torch.compile (Dynamo) has compiled so far in this process; 0 when it never ran.
    A forward that moves this number compiled part of the model while it ran."""
    dynamo = sys.modules.get("torch._dynamo")
    try:
        return int(dynamo.utils.counters["frames"]["total"]) if dynamo is not None else 0
    except (AttributeError, KeyError, TypeError):
        return 0


def dispatch_mode_base() -> type:
    """torch's TorchDispatchMode, the base class of a mode that sees every aten op (benchmarks/memtrack.py)."""
    return TorchDispatchMode


def tree_leaves(tree: Any) -> list:
    """The leaves of nested tuples / lists / dicts as torch's pytree flattens an op's arguments."""
    return _tree_leaves(tree)


def raise_recompile_limit(limit: int) -> list[str]:
    """Let torch.compile recompile one function up to `limit` times (each static shape is a recompile)
    before falling back to eager; returns the Dynamo config names set (renamed across releases)."""
    config = torch._dynamo.config  # imported on first access
    names = [n for n in ("cache_size_limit", "recompile_limit") if hasattr(config, n)]
    for name in names:
        setattr(config, name, limit)
    return names


# ------------------------------------------------------------------------------ TRL
def trl_load_model(name: str, args: Any, quantization_config: Any = None) -> nn.Module:
    """Load a model id the way SFTTrainer does (`model_init_kwargs`, SFTTrainer's own
    `quantization_config=`, no device_map under distributed training, `trust_remote_code`), so the
    freeze can be applied before SFTTrainer sees the model."""
    from trl.trainer.utils import create_model_from_path

    kwargs = dict(getattr(args, "model_init_kwargs", None) or {})
    if quantization_config is not None:
        if "quantization_config" in kwargs:
            raise ValueError("quantization_config is set both as a trainer argument and in "
                             "args.model_init_kwargs: set it in one place (the trainer argument).")
        kwargs["quantization_config"] = quantization_config
    if args is not None and args.distributed_state.distributed_type in ("MULTI_GPU", "DEEPSPEED"):
        kwargs["device_map"] = None  # as SFTTrainer does: device_map="auto" fails under distributed training
    kwargs.setdefault("trust_remote_code", getattr(args, "trust_remote_code", False))
    return create_model_from_path(name, **kwargs)


def trl_fused_lm_head(model: nn.Module) -> bool:
    """Whether TRL's `add_fused_lm_head` (TRL >= 1.16, called by SFTTrainer) replaced this instance's
    forward: that forward takes `fused_lm_head=` (its `functools.wraps` hides it from the followed
    signature, so the function's own signature is read)."""
    forward = model.__dict__.get("forward")
    func = getattr(forward, "__func__", None)
    if func is None:
        return False
    try:
        return "fused_lm_head" in inspect.signature(func, follow_wrapped=False).parameters
    except (TypeError, ValueError):
        return False


def sft_padding_free(trainer: Any) -> bool:
    """Whether an SFTTrainer flattens each batch into one row (padding-free / BFD packing)."""
    return bool(getattr(trainer, "padding_free", False))


# ------------------------------------------------------------------------------ datasets
def dataset_fingerprint(dataset: Any) -> str:
    """The fingerprint `datasets` keeps for a Dataset (`dataset._fingerprint`, updated by every
    transform); hashed from the dataset itself where a release drops the attribute."""
    fingerprint = getattr(dataset, "_fingerprint", None)
    if isinstance(fingerprint, str):
        return fingerprint
    return Hasher.hash(dataset)


def dataset_from_arrow(table: Any, info: Any) -> Any:
    """A `datasets.Dataset` over an in-memory pyarrow table with `info` (features, description),
    without re-encoding every value in Python as `Dataset.from_dict` does; from_dict where a
    release moves the table class."""
    if InMemoryTable is None:  # pragma: no cover - checked by tests/test_hf_compat.py
        return datasets.Dataset.from_dict(table.to_pydict(), features=info.features, info=info)
    return datasets.Dataset(InMemoryTable(table), info=info)


# ------------------------------------------------------------------------------ PEFT
def is_peft_model(model: Any) -> bool:
    """Whether `model` is a PEFT wrapper (PeftModel, PeftMixedModel, or a tuner model such as LoraModel
    built directly). Without peft imported no such model can exist, so peft is not imported here."""
    peft, tuners = sys.modules.get("peft"), sys.modules.get("peft.tuners.tuners_utils")
    candidates = (getattr(peft, "PeftModel", None), getattr(peft, "PeftMixedModel", None),
                  getattr(tuners, "BaseTuner", None))
    types = tuple(t for t in candidates if isinstance(t, type))
    return bool(types) and isinstance(model, types)


# ------------------------------------------------------------------------------ PEFT
@functools.lru_cache(maxsize=None)
def peft_adapter_types() -> tuple[type, ...]:
    """PEFT's injected-layer base class and its trainable-copy wrapper (modules_to_save, trainable
    tokens); empty without peft (then no PEFT model can exist either)."""
    try:
        from peft.tuners.tuners_utils import BaseTunerLayer
    except ImportError:
        return ()
    try:
        from peft.utils.other import AuxiliaryTrainingWrapper  # peft >= 0.15
    except ImportError:
        from peft.utils.other import ModulesToSaveWrapper as AuxiliaryTrainingWrapper
    return (BaseTunerLayer, AuxiliaryTrainingWrapper)


def peft_default_targets(model_type: str | None) -> list[str] | None:
    """PEFT's default LoRA target modules for an architecture (what `target_modules=None` means)."""
    from peft.utils import (
        TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING as defaults,
    )

    targets = defaults.get(model_type)
    return sorted(targets) if targets else None


# ------------------------------------------------------------------------------ triton (the AOT check)
def triton_gpu_target(arch: int) -> Any:
    """triton's compile target for NVIDIA compute capability `arch` (80, 90, 100), warp size 32."""
    from triton.backends.compiler import GPUTarget

    return GPUTarget("cuda", arch, 32)


def triton_specialize(kernel: Any, args: tuple, kwargs: dict, target: Any) -> tuple:
    """(options, signature, constexprs, attrs) for launching `kernel` (a JITFunction) with these arguments,
    exactly as `JITFunction.run` derives them, for `target`, without a GPU."""
    from triton import knobs
    from triton.compiler import make_backend
    from triton.runtime.jit import create_function_from_signature

    backend = make_backend(target)
    binder = create_function_from_signature(kernel.signature, kernel.params, backend)
    kw = dict(kwargs)
    kw["debug"] = kw.get("debug", kernel.debug) or knobs.runtime.debug
    for knob in ("instrumentation_mode", "fpsan_homomorphic_casts"):  # what run() adds, where this triton has it
        if hasattr(knobs.compilation, knob):
            kw[knob] = getattr(knobs.compilation, knob)
    bound, spec, opts = binder(*args, **kw)
    return kernel._pack_args(backend, kw, bound, spec, opts)


def triton_compile(kernel: Any, specialized: tuple, target: Any) -> Any:
    """Compile `kernel` for `target` with `triton_specialize`'s result; `.asm` holds "ttgir" and "cubin"."""
    import triton
    from triton.compiler import ASTSource

    options, signature, constexprs, attrs = specialized
    return triton.compile(ASTSource(kernel, signature, constexprs, attrs), target=target, options=options.__dict__)


def triton_nvidia_tool(name: str) -> str | None:
    """Path of an NVIDIA binary (cuobjdump, nvdisasm, ptxas) the triton wheel ships; None if it has none."""
    import triton.backends.nvidia as nv

    path = os.path.join(os.path.dirname(nv.__file__), "bin", name)
    return path if os.path.exists(path) else None
