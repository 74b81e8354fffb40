"""apply_freeze: freeze -> probe -> kernels -> prefix, on one model instance (the trainer calls it)."""
from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from .arch import ModelParts, is_peft_model, resolve
from .config import FreezeConfig
from .freezing import FreezeReport, freeze_bottom_layers
from .kernels import install_kernels, resolve_kernel_set
from .prefix import FrozenPrefix


@dataclass
class FreezeRuntime:
    """Everything `apply_freeze` set up on one model."""

    config: FreezeConfig
    parts: ModelParts
    report: FreezeReport
    prefix: FrozenPrefix | None  # None when the frozen blocks are not a prefix (freeze_embeddings=False)
    kernel_set: str = "torch"  # which implementation the modules run: "torch" or "triton"


def apply_freeze(model: nn.Module, config: FreezeConfig) -> FreezeRuntime:
    """Validate `config` against `model`, freeze by module index, and install the no-grad prefix.

    Usage:
        runtime = apply_freeze(model, FreezeConfig(num_frozen_layers=4)); print(runtime.report)
    """
    peft = is_peft_model(model)
    if peft:
        # A PEFT wrapper: the split is made on the wrapped transformers model; adapters must sit in
        # the trainable suffix, and the base weights stay frozen (PEFT decides what trains).
        from .peft_support import base_model_for_freeze

        target = base_model_for_freeze(model, config)
    else:
        target = model
    parts = resolve(target)
    config.validate_for(parts.num_layers)
    report = freeze_bottom_layers(target, config.num_frozen_layers, config.freeze_embeddings,
                                  config.untie_embeddings, parts=parts, make_rest_trainable=not peft)
    kernel_set = resolve_kernel_set(config.kernels, target)
    if kernel_set == "triton":
        report.notes.append(str(install_kernels(target, parts, config.num_frozen_layers, fused_loss=config.fused_loss)))
    prefix = None
    if config.is_prefix:
        prefix = FrozenPrefix(target, parts, config.num_frozen_layers).install()
    else:
        report.notes.append("freeze_embeddings=False: frozen blocks sit above a trainable embedding, "
                            "so they run with autograd (no prefix fast path, no cache)")
    return FreezeRuntime(config=config, parts=parts, report=report, prefix=prefix, kernel_set=kernel_set)
