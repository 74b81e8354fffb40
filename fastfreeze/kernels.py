"""Chooses torch ops or csrc_triton kernels (the one place that decides) and swaps them in per model instance."""
from __future__ import annotations

import os

import torch
from torch import nn

from .arch import ModelParts

# Tests force a choice with this environment variable ("torch" or "triton"); it overrides "auto" only.
ENV_SWITCH = "FASTFREEZE_KERNELS"


def resolve_kernel_set(choice: str, model: nn.Module) -> str:
    """'auto' -> 'triton' when the model lives on CUDA and Triton is importable, else 'torch'."""
    if choice == "auto":
        forced = os.environ.get(ENV_SWITCH)
        if forced in ("torch", "triton"):
            return forced
        device = next(model.parameters()).device
        if device.type == "cuda" and torch.cuda.is_available():
            import csrc_triton

            return "triton" if csrc_triton.AVAILABLE else "torch"
        return "torch"
    return choice


def install_kernels(model: nn.Module, parts: ModelParts, num_frozen_layers: int) -> dict:
    """Swap the model's norms/MLPs/rotary/loss for csrc_triton ops (per instance). Being written."""
    raise NotImplementedError("kernels='triton' integration is not available yet; use kernels='torch'.")
