"""Fused Triton kernels for fastfreeze: forward-only ops for the frozen prefix, training ops for the suffix.

Public ops (all differentiable; when no input requires grad they run a forward-only kernel that
saves nothing for backward; backward computes a weight gradient only if that weight requires grad):

- ``rms_norm(x, weight, eps=1e-6, offset=0.0, cast_mode=None)``: Llama / Gemma (offset=1.0) RMSNorm.
- ``rms_norm_residual(x, residual, weight, eps=1e-6, offset=0.0, cast_mode=None) -> (normed, x + residual)``.
- ``swiglu(gate, up=None)``: ``silu(gate) * up`` (or one concatenated [gate | up] tensor).
- ``apply_rope(q, k, cos, sin, rotary_dim=None) -> (q, k)``: HF rotate-half RoPE, partial rotary.
- ``linear_cross_entropy(hidden, weight, labels, ignore_index=-100, bias=None, reduction="mean",
  num_items_in_batch=None, softcap=None, chunk_size=None)``: LM head + HF causal-LM loss, chunked.

Usage: ``import csrc_triton; y = csrc_triton.rms_norm(x, norm.weight, norm.variance_epsilon)``

Not covered here, by design: LayerNorm and GELU (GPT-NeoX, GPT-2) use torch's own fused ops
(``F.layer_norm``, ``F.gelu``), which are already single kernels; fastfreeze leaves those modules as they are.

Importing this package never fails: if triton is missing (or cannot load), calling an op raises
an ImportError that says how to fix it; ``AVAILABLE`` tells callers up front.
The op functions shadow their same-named submodules as package attributes: reach a module with
``importlib.import_module("csrc_triton.rms_norm")`` or ``from csrc_triton.rms_norm import RMSNormFunction``
(not ``import csrc_triton.rms_norm as m``, which yields the function).
Tests and CPU runs use Triton's interpreter (``TRITON_INTERPRET=1`` set before triton is imported).
"""
from __future__ import annotations

__all__ = ["AVAILABLE", "apply_rope", "linear_cross_entropy", "rms_norm", "rms_norm_residual", "swiglu"]

import importlib as _importlib

try:
    # Submodules load first and the functions are bound after: the submodules `rms_norm`, `swiglu`
    # and `linear_cross_entropy` share their op's name, and binding last keeps
    # `csrc_triton.rms_norm` the function (later imports of the submodule do not rebind it).
    # import_module (not `from csrc_triton import ...`) returns the module even on a reload.
    _lce_mod = _importlib.import_module("csrc_triton.linear_cross_entropy")
    _rms_mod = _importlib.import_module("csrc_triton.rms_norm")
    _rope_mod = _importlib.import_module("csrc_triton.rope")
    _swiglu_mod = _importlib.import_module("csrc_triton.swiglu")
except Exception as _err:  # triton missing or broken: keep the package importable
    AVAILABLE = False
    _IMPORT_ERROR = f"{type(_err).__name__}: {_err}"

    def _unavailable(name):
        def op(*args, **kwargs):
            raise ImportError(
                f"csrc_triton.{name} needs triton, which could not be imported ({_IMPORT_ERROR}). "
                "Install it with `pip install triton` on a Linux machine, or use kernels='torch'."
            )
        op.__name__ = name
        return op

    rms_norm = _unavailable("rms_norm")
    rms_norm_residual = _unavailable("rms_norm_residual")
    swiglu = _unavailable("swiglu")
    apply_rope = _unavailable("apply_rope")
    linear_cross_entropy = _unavailable("linear_cross_entropy")
else:
    AVAILABLE = True
    rms_norm = _rms_mod.rms_norm
    rms_norm_residual = _rms_mod.rms_norm_residual
    swiglu = _swiglu_mod.swiglu
    apply_rope = _rope_mod.apply_rope
    linear_cross_entropy = _lce_mod.linear_cross_entropy
