"""apply_freeze: freeze -> probe -> kernels -> prefix, on one model instance (the trainer calls it)."""
from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from .families import ModelParts, UnsupportedModelError, is_peft_model, resolve
from .adapters import base_model_for_freeze
from .config import FreezeConfig
from .freeze import FreezeReport, freeze_bottom_layers
from .kernels import install_kernels, resolve_kernel_set
from .prefix import FrozenPrefix
from .probe import ProbeReport, probe_fast_path


@dataclass
class FreezeRuntime:
    """Everything `apply_freeze` set up on one model."""

    config: FreezeConfig
    parts: ModelParts
    report: FreezeReport
    prefix: FrozenPrefix | None  # None when the frozen blocks are not a prefix (freeze_embeddings=False)
    kernel_set: str = "torch"  # which implementation the modules run: "torch" or "triton"
    probe: ProbeReport | None = None  # the install-time check (None with FreezeConfig(probe=False))

    @property
    def cache_refusal(self) -> str | None:
        """Why the prefix cache cannot serve this model (None: it can, or it was not probed)."""
        return self.probe.cache_refusal if self.probe else None


def apply_freeze(model: nn.Module, config: FreezeConfig) -> FreezeRuntime:
    """Validate `config` against `model`, freeze by module index, and install the no-grad prefix.

    Usage:
        runtime = apply_freeze(model, FreezeConfig(num_frozen_layers=4)); print(runtime.report)
    """
    peft = is_peft_model(model)
    if peft:
        # A PEFT wrapper: the split is made on the wrapped transformers model; adapters must sit in
        # the trainable suffix, and the base weights stay frozen (PEFT decides what trains).
        target = base_model_for_freeze(model, config)
    else:
        target = model
    parts = resolve(target)
    config.validate_for(parts.num_layers)
    report = freeze_bottom_layers(target, config.num_frozen_layers, config.freeze_embeddings,
                                  config.untie_embeddings, parts=parts)
    kernel_set = resolve_kernel_set(config.kernels, target)
    if kernel_set == "triton":
        report.notes.append(str(install_kernels(target, parts, config.num_frozen_layers, fused_loss=config.fused_loss)))
    prefix, probe = None, None
    if config.is_prefix:
        prefix = FrozenPrefix(target, parts, config.num_frozen_layers).install()
        if config.probe:
            try:
                probe = probe_fast_path(target, prefix, config.allow_eval_prefix)
            except UnsupportedModelError:
                prefix.remove()
                raise
            report.notes.append(str(probe))
            if config.cache and probe.cache_refusal:
                prefix.remove()
                raise UnsupportedModelError(
                    f"{type(target).__name__}: prefix cache refused: {probe.cache_refusal}. The fast path without a "
                    "cache is exact for this model: use FreezeConfig(cache=None)."
                )
    else:
        report.notes.append("freeze_embeddings=False: frozen blocks sit above a trainable embedding, "
                            "so they run with autograd (no prefix fast path, no cache)")
    return FreezeRuntime(config=config, parts=parts, report=report, prefix=prefix, kernel_set=kernel_set,
                         probe=probe)
