"""The kernel registry: one entry per csrc_triton op that fastfreeze swaps into a model's modules.

An entry says everything `fastfreeze.kernels.install_kernels` needs about one op: which modules it
replaces (`matches`), the family fact that allows it and parameterizes it (`fact`: for RMSNorm the cast
mode, passed as is to `csrc_triton.rms_norm(cast_mode=)`; for SwiGLU the projection layout), the
training forward built from that fact (`make_forward`; the forward-only variant for the frozen prefix is
derived, `forwards`), the `FreezeConfig` switch that turns it off, and what the report says when the
family has no such module. Adding a kernel: its `csrc_triton/<op>.py` file and one entry in `ENTRIES`
(docs/extending.md). The fused loss is not a module swap (it wraps the CausalLM forward); it lives in
kernels.py with its own switch, `FreezeConfig.fused_loss`.

Usage:
    for entry in ENTRIES:
        width = entry.matches(module, entry.fact(spec))   # None: not one of this op's modules
"""
from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

from ._hf_compat import full_shape
from .families import FamilySpec

_SILU_CLASSES = ("SiLU", "SiLUActivation")  # nn.SiLU and transformers' own class (name differs by version)


@dataclass(frozen=True)
class KernelEntry:
    """One op the kernels swap in, per module (see the module docstring).

    `fact(spec)` is the family's fact for this op (None: the family has no module this op computes);
    `matches(module, fact)` the probe width when `module` is one it replaces, else None;
    `make_forward(fact)` the training forward, `fn(module, x)`; `switch` a bool field of FreezeConfig;
    `torch_note` the report line for a family whose fact is None."""

    name: str
    switch: str
    fact: Callable[[FamilySpec], str | None]
    matches: Callable[[nn.Module, str], int | None]
    make_forward: Callable[[str], Callable]
    torch_note: str

    def forwards(self, fact: str) -> tuple[Callable, Callable]:
        """(training forward, forward-only forward) for this family fact; the same functions on every call."""
        return _forwards(self, fact)


@functools.cache
def _forwards(entry: KernelEntry, fact: str) -> tuple[Callable, Callable]:
    train = entry.make_forward(fact)
    return train, _forward_only(train)


def _forward_only(fn: Callable) -> Callable:
    # The prefix never needs gradients (prefix.py also runs it under no_grad); no_grad here makes
    # the ops take their forward-only kernels, which save nothing for backward.
    def forward(self, *args, **kwargs):
        with torch.no_grad():
            return fn(self, *args, **kwargs)

    forward.__name__ = f"{fn.__name__}_forward_only"
    return forward


# ----------------------------------------------------------------------------- RMSNorm
def _norm_eps(module: nn.Module) -> float:
    return float(getattr(module, "variance_epsilon", getattr(module, "eps", 1e-6)))


def _rms_norm_matches(module: nn.Module, cast_mode: str) -> int | None:
    weight = getattr(module, "weight", None)
    if type(module).__name__.endswith("RMSNorm") and isinstance(weight, nn.Parameter) and len(full_shape(weight)) == 1 \
            and len(list(module.parameters())) == 1:
        return full_shape(weight)[0]  # the whole width, also for a DeepSpeed ZeRO-3 placeholder
    return None


def _rms_norm_forward(cast_mode: str) -> Callable:
    def forward(self: nn.Module, hidden_states: torch.Tensor) -> torch.Tensor:
        import csrc_triton

        return csrc_triton.rms_norm(hidden_states, self.weight, _norm_eps(self), cast_mode=cast_mode)

    forward.__name__ = f"rms_norm_{cast_mode}"
    return forward


# ----------------------------------------------------------------------------- SwiGLU
_SWIGLU_PROJECTIONS = {"split": ("gate_proj", "up_proj", "down_proj"), "fused": ("gate_up_proj", "down_proj")}


def _swiglu_matches(module: nn.Module, layout: str) -> int | None:
    if not type(module).__name__.endswith("MLP"):
        return None
    act = getattr(module, "act_fn", getattr(module, "activation_fn", None))
    if type(act).__name__ not in _SILU_CLASSES or not all(hasattr(module, a) for a in _SWIGLU_PROJECTIONS[layout]):
        return None
    return getattr(module, _SWIGLU_PROJECTIONS[layout][0]).in_features


def _swiglu_split(self: nn.Module, x: torch.Tensor) -> torch.Tensor:
    import csrc_triton

    return self.down_proj(csrc_triton.swiglu(self.gate_proj(x), self.up_proj(x)))


def _swiglu_fused(self: nn.Module, hidden_states: torch.Tensor) -> torch.Tensor:
    import csrc_triton

    return self.down_proj(csrc_triton.swiglu(self.gate_up_proj(hidden_states)))


# ----------------------------------------------------------------------------- the registry
ENTRIES: tuple[KernelEntry, ...] = (
    KernelEntry(name="rms_norm", switch="rms_norm", fact=lambda spec: spec.rms_norm,
                matches=_rms_norm_matches, make_forward=_rms_norm_forward,
                torch_note="norms: LayerNorm, not RMSNorm (torch's fused op)"),
    KernelEntry(name="swiglu", switch="swiglu", fact=lambda spec: spec.swiglu,
                matches=_swiglu_matches, make_forward={"split": _swiglu_split, "fused": _swiglu_fused}.__getitem__,
                torch_note="MLP: not SwiGLU (GELU or GeGLU: torch ops, no csrc_triton op)"),
)
