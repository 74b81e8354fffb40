"""Chooses torch ops or csrc_triton kernels (the one place that decides) and swaps them in per model instance.

`install_kernels` replaces, on one model instance only, the `forward` of:

- the modules of each op in the kernel registry (`fastfreeze.kernel_registry.ENTRIES`): RMSNorm modules
  (decoder norms, the final norm, Qwen3's q/k norms) -> `csrc_triton.rms_norm` with the family's cast
  mode; SwiGLU MLPs (``down(silu(gate(x)) * up(x))``, Phi-3's fused ``gate_up_proj``) -> `csrc_triton.swiglu`;
- the causal-LM object itself, so that a training forward with labels computes the loss with
  `csrc_triton.linear_cross_entropy` from the LM head's input and never materialises the logits (the head's
  forward gets a tap, bound once at install, that records its input during such a forward).
Each op has a switch in `FreezeConfig` (rms_norm, swiglu, fused_loss) to bisect a problem.

Modules of the frozen prefix (embedding side + layers[:k], when all of it is frozen) get
forward-only variants that run under no_grad; the suffix gets the training variants, whose
backward computes a weight gradient only when that weight requires grad. No transformers class
or module global is touched, parameters and buffers are unchanged, so `save_pretrained` writes a
plain HF checkpoint. Every swapped module class is checked once on a probe input against the
module's own forward; a class whose forward no longer matches (a transformers change) keeps torch.

Left on torch, by design:
- RoPE: HF applies it through the module-level `apply_rotary_pos_emb` called inside each
  attention's forward. Using `csrc_triton.apply_rope` would mean patching that global (forbidden:
  it changes every model in the process) or copying each family's attention forward, whose
  signature and cache handling change between transformers releases (5.17 vs 5.24). Not worth
  the risk for an op that is a small share of step time.
- LayerNorm / GELU (GPT-NeoX, GPT-2) and GeGLU (Gemma): torch's fused ops are already one kernel.

Fused-loss contract: in training mode with `labels=` given as a keyword, the model returns the
loss with ``logits=None`` (that is the point: the [tokens x vocab] logits never exist). In eval
mode, or without labels, the model's own forward runs and returns logits, so `Trainer.evaluate`
with `compute_metrics` and `generate` behave as without fastfreeze. A trainer that reads
``outputs.logits`` in training gets the fused loss turned off by `FreezeMixin` (noted in the report;
`fastfreeze.trainer.trainer_reads_logits` decides). One fused head only: where TRL's `add_fused_lm_head` already
replaced the model's forward (SFTTrainer, TRL >= 1.16, which needs its per-token log-probs, entropy
and top-1 flags), TRL's head computes the loss and this one is not installed (`KernelReport.loss_head`).

Usage:
    report = install_kernels(model, resolve(model), num_frozen_layers=6); print(report)
    remove_kernels(model)   # original forwards back
"""
from __future__ import annotations

import contextlib
import inspect
import os
from collections import Counter
from collections.abc import Collection
from dataclasses import dataclass, field
from typing import NamedTuple

import torch
from torch import nn

from . import _patch
from ._hf_compat import causal_lm_loss, trl_fused_lm_head, zero3_gathered
from .families import FAMILIES, FamilySpec, ModelParts
from .kernel_registry import ENTRIES
from .trace import eval_mode

# Tests force a choice with this environment variable ("torch" or "triton"); it overrides "auto" only.
ENV_SWITCH = "FASTFREEZE_KERNELS"


class KernelChoice(NamedTuple):
    """Which implementation the modules run, and why a run on a CUDA device uses torch ops (None: it does not)."""

    kernel_set: str  # "torch" or "triton"
    reason: str | None


def choose_kernel_set(choice: str, model: nn.Module, device: torch.device | str | None = None) -> KernelChoice:
    """The one decision: 'auto' -> 'triton' when the model trains on a CUDA device (`device`, default: where
    its weights are now) and Triton is importable, else 'torch'; with the reason when a CUDA run gets torch.
    Decide it on the training device: a model loaded on the CPU and moved by Trainer trains on CUDA.

    Usage:
        kernel_set, reason = choose_kernel_set(config.kernels, model, trainer.args.device)
    """
    device = torch.device(device) if device is not None else next(model.parameters()).device
    on_cuda = device.type == "cuda"
    forced = os.environ.get(ENV_SWITCH) if choice == "auto" else None
    if choice == "triton" or forced == "triton":
        return KernelChoice("triton", None)
    if choice == "torch":
        return KernelChoice("torch", "kernels=torch on a CUDA device: FreezeConfig(kernels='torch') asked for it"
                            if on_cuda else None)
    if forced == "torch":
        return KernelChoice("torch", f"kernels=torch on a CUDA device: the environment sets {ENV_SWITCH}=torch"
                            if on_cuda else None)
    if not on_cuda:
        return KernelChoice("torch", None)
    if not torch.cuda.is_available():
        return KernelChoice("torch", "kernels=torch: the training device is CUDA but torch.cuda.is_available() "
                                     "is False in this process")
    import csrc_triton

    if csrc_triton.AVAILABLE:
        return KernelChoice("triton", None)
    return KernelChoice("torch", "kernels=torch on a CUDA device: triton cannot be imported "
                                 f"({getattr(csrc_triton, '_IMPORT_ERROR', None)}); install triton for the fused kernels")


OWNER = "kernels"  # the owner of this module's per-instance patches (fastfreeze._patch)
# The LM head's tap (bound with the fused loss, see _HeadTap) has its own owner: it is part of the fused
# loss, which the report and remove_kernels count once, as the CausalLM forward.
HEAD_OWNER = "kernels:head"


@dataclass
class KernelReport:
    """What `install_kernels` did: module path -> kernel label, plus what was left on torch and why."""

    family: str
    swapped: dict[str, str] = field(default_factory=dict)
    left_on_torch: list[str] = field(default_factory=list)
    loss_head: str = "the model's own LM head and loss (logits materialized)"  # what computes the training loss

    def counts(self) -> dict[str, int]:
        """Kernel label -> number of modules, e.g. {"rms_norm/train": 5, "rms_norm/forward-only": 4}."""
        return dict(Counter(self.swapped.values()))

    def __str__(self) -> str:
        counts = ", ".join(f"{k} x{n}" for k, n in sorted(self.counts().items())) or "none"
        torch_side = "; ".join(self.left_on_torch) or "nothing"
        return f"kernels=triton ({self.family}): {counts}. Left on torch: {torch_side}. Training loss: {self.loss_head}."


# ----------------------------------------------------------------------------- the fused loss
class _HeadTap:
    """The LM head's forward while the fused loss is installed, bound once at install: the head's own
    forward, except inside a fused-loss training forward (`sink` set), where it records its input and
    returns a zero-width tensor (any soft-cap arithmetic on it costs nothing). Nothing is patched per
    step: a training forward sets and clears `sink`, a plain attribute."""

    def __init__(self, head: nn.Module):
        self.head, self.original = head, head.forward  # the forward it had: the class's, or an override
        self.sink: list[torch.Tensor] | None = None

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self.sink is None:
            return self.original(x)
        self.sink.append(x)
        return x.new_empty(*x.shape[:-1], 0)


class _FusedLossForward:
    """The CausalLM object's forward: in training with labels, runs the model's own forward with the
    LM head's tap recording its input (instead of computing logits), then computes the HF causal-LM
    loss with linear_cross_entropy. Otherwise the model's own forward, untouched.

    A callable object rather than a bound function: it carries the original `__signature__`
    (Trainer reads it to decide loss-kwargs and dataset columns, generate to validate kwargs), and
    deepcopy rebinds it (and the tap) to the copied model."""

    def __init__(self, model: nn.Module, tap: _HeadTap, softcap: float | None):
        self.model, self.tap, self.softcap = model, tap, softcap
        self.original = type(model).forward.__get__(model)

    @property
    def __signature__(self) -> inspect.Signature:
        return inspect.signature(self.original)

    def __call__(self, *args, **kwargs):
        labels = kwargs.get("labels")
        keep = kwargs.get("logits_to_keep", 0)
        # Asked for now, not at install: an adapter may have wrapped the head since (or it was replaced).
        head = self.model.get_output_embeddings()
        if (labels is None or not self.model.training or kwargs.get("return_dict") is False
                or not isinstance(keep, int) or keep != 0 or type(head) is not nn.Linear or head is not self.tap.head):
            return self.original(*args, **kwargs)
        captured: list[torch.Tensor] = []
        self.tap.sink = captured
        try:
            out = self.original(*args, **{**kwargs, "labels": None})
        finally:
            self.tap.sink = None
        if len(captured) != 1:
            raise RuntimeError(f"fastfreeze fused loss: the LM head ran {len(captured)} times in one forward; "
                               "install kernels with fused_loss=False for this model.")
        loss = self._loss(captured[0], head, labels, kwargs)
        fields = {k: v for k, v in out.items() if k not in ("loss", "logits")}
        return type(out)(loss=loss, **fields)

    def _loss(self, hidden: torch.Tensor, head: nn.Linear, labels: torch.Tensor, kwargs: dict) -> torch.Tensor:
        """HF ForCausalLMLoss (shift by padding labels with ignore_index; sum / num_items_in_batch,
        else mean over valid tokens) on the fused head + cross-entropy."""
        import csrc_triton

        ignore_index = kwargs.get("ignore_index", -100)
        shift_labels = kwargs.get("shift_labels")
        if shift_labels is None:
            shift_labels = nn.functional.pad(labels, (0, 1), value=ignore_index)[..., 1:]
        weight = head.weight
        hidden = hidden.to(weight.device)
        return csrc_triton.linear_cross_entropy(
            hidden.reshape(-1, hidden.shape[-1]), weight, shift_labels.reshape(-1).to(weight.device),
            ignore_index=ignore_index, bias=head.bias, num_items_in_batch=kwargs.get("num_items_in_batch"),
            softcap=self.softcap)


# ----------------------------------------------------------------------------- install / remove
def _check_runnable(model: nn.Module) -> None:
    import csrc_triton

    if not csrc_triton.AVAILABLE:
        raise ImportError(f"kernels='triton' needs triton, which could not be imported ({csrc_triton._IMPORT_ERROR}). "
                          "Install it with `pip install triton` on a Linux CUDA machine, or use kernels='torch'.")
    param = next(model.parameters())
    if param.device.type != "cuda" and os.environ.get("TRITON_INTERPRET") != "1":
        raise RuntimeError(
            f"kernels='triton' needs the model on a CUDA device (it is on {param.device}). Move it with "
            "model.to('cuda'), or use FreezeConfig(kernels='auto' or 'torch') on CPU.")
    if param.dtype not in (torch.float32, torch.float16, torch.bfloat16):
        raise RuntimeError(f"kernels='triton' supports float32/float16/bfloat16 weights, the model is {param.dtype}; "
                           "cast it (model.to(torch.bfloat16)) or use kernels='torch'.")


def _probe_input(module: nn.Module, width: int) -> torch.Tensor:
    # Deterministic values, no RNG draw: installing kernels must not shift the training seed stream.
    p = next(module.parameters())
    n = 3 * 5 * width
    x = torch.sin(torch.arange(n, dtype=torch.float32, device=p.device) * 0.731) * 2.0
    return x.reshape(3, 5, width).to(p.dtype)


_PROBE_RTOL = {torch.float32: 1e-4, torch.float16: 4e-3, torch.bfloat16: 3e-2}


@contextlib.contextmanager
def _whole_weights(module: nn.Module):
    """FSDP2-sharded weights (DTensor shards, outside their unit's forward) replaced by the whole tensors
    for the duration of the check below, which calls the module on its own; restored after. Gathering is
    a collective: every rank checks the same classes in the same order (install_kernels' loop)."""
    swapped = []
    for sub in module.modules():
        for name, p in list(sub.named_parameters(recurse=False)):
            if hasattr(p, "full_tensor"):
                swapped.append((sub, name, p))
                setattr(sub, name, nn.Parameter(p.full_tensor().detach(), requires_grad=False))
    try:
        yield
    finally:
        for sub, name, p in swapped:
            setattr(sub, name, p)


def _matches_on_probe(module: nn.Module, new_forward, width: int) -> bool:
    """The swapped forward reproduces the module's own forward on a probe input (catches a
    transformers change in what the module computes; tolerance: a few roundings of the dtype)."""
    # Eval: no dropout draws inside (e.g. LoRA dropout on the projections).
    # Whole weights for this call (ZeRO-3 gathered, FSDP2 swapped): collectives, same classes and order on every rank.
    with eval_mode(module), zero3_gathered(module.parameters()), _whole_weights(module), torch.no_grad():
        x = _probe_input(module, width)
        ref = type(module).forward(module, x)
        got = new_forward(module, x)
    if got.shape != ref.shape or got.dtype != ref.dtype:
        return False
    scale = ref.float().abs().max().clamp_min(1.0)
    return bool(((got.float() - ref.float()).abs().max() <= _PROBE_RTOL.get(ref.dtype, 1e-4) * scale).item())


def _prefix_modules(parts: ModelParts, k: int) -> set[int]:
    """ids of modules inside the frozen prefix; empty when the embedding side trains (then the
    frozen blocks still pass gradients down and need the training variants)."""
    side = [m for _, m in parts.embedding_side]
    blocks = [parts.layers[i] for i in range(k)]
    if any(p.requires_grad for m in side + blocks for p in m.parameters()):
        return set()
    return {id(sub) for m in side + blocks for sub in m.modules()}


def switched_off(config) -> tuple[str, ...]:
    """The registry ops a `FreezeConfig` switches off (its per-op bool fields), for `install_kernels(skip=)`.

    Usage: ``install_kernels(model, parts, k, fused_loss=config.fused_loss, skip=switched_off(config))``
    """
    return tuple(entry.switch for entry in ENTRIES if not getattr(config, entry.switch))


def install_kernels(model: nn.Module, parts: ModelParts, num_frozen_layers: int, fused_loss: bool = True,
                    skip: Collection[str] = ()) -> KernelReport:
    """Swap the model's modules for the csrc_triton ops of the kernel registry (RMSNorm, SwiGLU MLPs) and
    its LM-head loss for the fused one, on this instance only.

    Usage:
        report = install_kernels(model, fastfreeze.families.resolve(model), num_frozen_layers=6)

    `skip` names registry ops left on torch (their `FreezeConfig` switches: "rms_norm", "swiglu"); `fused_loss`
    is the loss's switch. Call it after freezing (which modules are prefix is read from requires_grad) and
    before the prefix runtime is installed. Modules whose forward is already overridden on the instance
    (e.g. accelerate hooks) are left alone and listed in the report.
    """
    switches = {entry.switch for entry in ENTRIES}
    if not set(skip) <= switches:
        raise ValueError(f"install_kernels(skip={sorted(skip)}): unknown op switches {sorted(set(skip) - switches)}; "
                         f"the registry's are {sorted(switches)}")
    if any(OWNER in _patch.owners(m) for m in model.modules()):
        raise RuntimeError("csrc_triton kernels are already installed on this model; call remove_kernels(model) first.")
    _check_runnable(model)
    spec = FAMILIES.get(parts.family)  # a family found by discovery has no kernel facts: torch everywhere
    report = KernelReport(family=parts.family)
    report.left_on_torch.append("RoPE (HF calls the module-level apply_rotary_pos_emb; never patched)")
    if spec is None:
        report.left_on_torch.append(f"all modules: no kernel table for family {parts.family!r} "
                                    "(add a FamilySpec with its kernel facts to fastfreeze/families.py:FAMILIES)")
        return report
    active = []  # (entry, the family's fact for it)
    for entry in ENTRIES:
        fact = entry.fact(spec)
        if fact is None:
            report.left_on_torch.append(entry.torch_note)
        elif entry.switch in skip:
            report.left_on_torch.append(f"{entry.name}: switched off (FreezeConfig({entry.switch}=False))")
        else:
            active.append((entry, fact))
    _swap_modules(model, _prefix_modules(parts, num_frozen_layers), active, report)
    _install_fused_loss(model, parts, spec, fused_loss, report)
    return report


def _swap_modules(model: nn.Module, prefix_ids: set[int], active: list, report: KernelReport) -> None:
    """Bind each matching module's forward (forward-only inside the prefix), once its class passed the probe."""
    verified: dict[tuple[type, str], bool] = {}
    for path, module in model.named_modules():
        found = next(((entry, fact, width) for entry, fact in active
                      if (width := entry.matches(module, fact)) is not None), None)
        if found is None:
            continue
        entry, fact, width = found
        if _patch.overridden(module, "forward"):
            report.left_on_torch.append(f"{path}: forward already overridden on the instance")
            continue
        train, forward_only = entry.forwards(fact)
        key = (type(module), entry.name)
        if key not in verified:
            verified[key] = _matches_on_probe(module, train, width)
            if not verified[key]:
                report.left_on_torch.append(f"{type(module).__name__}: its forward no longer matches the "
                                            f"{entry.name} ({fact}) kernel")
        if not verified[key]:
            continue
        prefix = id(module) in prefix_ids
        _patch.bind(module, "forward", forward_only if prefix else train, OWNER)
        report.swapped[path] = f"{entry.name}/{'forward-only' if prefix else 'train'}"


def _install_fused_loss(model: nn.Module, parts: ModelParts, spec: FamilySpec, enabled: bool,
                        report: KernelReport) -> None:
    if trl_fused_lm_head(model):
        # One fused head: two would compute the loss twice, or ours would never run. TRL's stays, since
        # SFTTrainer reads its per-token outputs (entropy, token accuracy, the DFT loss) as well.
        report.loss_head = ("TRL's fused LM head (SFTTrainer calls model(..., fused_lm_head=True): loss, entropy and "
                            "token accuracy without logits); fastfreeze's fused loss is not installed")
        return
    hf_loss = causal_lm_loss()
    reason = None
    if not enabled:
        reason = "disabled (fused_loss=False)"
    elif not spec.fused_loss:
        reason = f"family {parts.family!r} has a custom loss path"
    elif type(parts.head) is not nn.Linear:
        reason = f"the head is a {type(parts.head).__name__}, not a plain nn.Linear (e.g. wrapped by an adapter)"
    elif hf_loss is None or getattr(model, "loss_function", None) is not hf_loss:
        reason = "the model's loss_function is not HF's ForCausalLMLoss"
    elif _patch.overridden(model, "forward"):
        reason = "the model's forward is already overridden on the instance"
    if reason is not None:
        report.left_on_torch.append(f"LM head loss: {reason}")
        return
    softcap = getattr(model.config, "final_logit_softcapping", None)
    tap = _patch.patch(parts.head, "forward", _HeadTap(parts.head), HEAD_OWNER)  # bound once, not per step
    _patch.patch(model, "forward", _FusedLossForward(model, tap, softcap), OWNER)
    report.swapped[parts.head_path] = "linear_cross_entropy/train" + (f" (softcap {softcap})" if softcap else "")
    report.loss_head = "fastfreeze's fused loss (csrc_triton.linear_cross_entropy; training forwards return logits=None)"


def remove_kernels(model: nn.Module) -> int:
    """Restore the model's own forwards wherever `install_kernels` swapped them; returns how many.
    Raises RuntimeError when a forward was replaced again after the install (e.g. by accelerate).

    Usage:
        remove_kernels(model)
    """
    restored = 0
    for module in model.modules():
        swapped = _patch.patched(module, "forward", OWNER)
        if _patch.unpatch_all(module, OWNER):
            restored += swapped
        _patch.unpatch_all(module, HEAD_OWNER)  # the fused loss's head tap, counted with the CausalLM forward
    return restored
