"""Fused Triton kernels for fastfreeze: forward-only ops for the frozen prefix, training ops for the suffix.

Public ops (all differentiable; when no input requires grad they run a forward-only kernel that
saves nothing for backward; backward computes a weight gradient only if that weight requires grad):

- ``rms_norm(x, weight, eps=1e-6, cast_mode="llama")``: Llama / Gemma (``cast_mode="gemma"``: 1 + w) RMSNorm.
- ``swiglu(gate, up=None)``: ``silu(gate) * up`` (or one concatenated [gate | up] tensor).
- ``apply_rope(q, k, cos, sin, rotary_dim=None) -> (q, k)``: HF rotate-half RoPE, partial rotary.
- ``linear_cross_entropy(hidden, weight, labels, ignore_index=-100, bias=None, reduction="mean",
  num_items_in_batch=None, softcap=None, chunk_size=None)``: LM head + HF causal-LM loss, chunked.

Usage: ``import csrc_triton; y = csrc_triton.rms_norm(x, norm.weight, norm.variance_epsilon)``

One op per module: every module here not starting with ``_`` is an op module, and the names in its
``__all__`` become package attributes (a new op is a new file; this one needs no edit).
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

import ast as _ast
import importlib as _importlib
import pathlib as _pathlib
import pkgutil as _pkgutil

_OP_MODULES = sorted(m.name for m in _pkgutil.iter_modules(__path__) if not m.name.startswith("_"))


def _declared_ops(module_name: str) -> list[str]:
    """The op names a module declares in `__all__`, read from its source (without importing triton)."""
    tree = _ast.parse((_pathlib.Path(__file__).parent / f"{module_name}.py").read_text())
    for node in tree.body:
        if isinstance(node, _ast.Assign) and any(getattr(t, "id", None) == "__all__" for t in node.targets):
            return list(_ast.literal_eval(node.value))
    raise RuntimeError(f"csrc_triton/{module_name}.py declares no __all__: name the op it exposes")


_OPS = {name: mod for mod in _OP_MODULES for name in _declared_ops(mod)}  # op name -> its module
__all__ = ["AVAILABLE", *sorted(_OPS)]

try:
    # Submodules load first and the functions are bound after: a submodule that shares its op's name
    # (`rms_norm`, `swiglu`, `linear_cross_entropy`) would otherwise stay the package attribute.
    # import_module (not `from csrc_triton import ...`) returns the module even on a reload.
    _modules = {mod: _importlib.import_module(f"csrc_triton.{mod}") for mod in _OP_MODULES}
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

    globals().update({name: _unavailable(name) for name in _OPS})
else:
    AVAILABLE = True
    globals().update({name: getattr(_modules[mod], name) for name, mod in _OPS.items()})
