"""PEFT adapters on the trainable suffix only: validate a PeftModel against a freeze and find its base model.

A frozen prefix runs with no autograd and may be served from a cache, so nothing in it may train.
An adapter placed on a prefix module (LoRA on `layers.0.q_proj`, `modules_to_save=["embed_tokens"]`,
trainable token indices, prompt/prefix tuning, which act at the input) would be silently cut off
from its gradient, so it is refused here with the fix.

Usage:
    lora = LoraConfig(target_modules=["q_proj", "v_proj"], **suffix_lora_kwargs(model, k=2))
    peft_model = get_peft_model(model, lora)
    trainer = FastFreezeTrainer(model=peft_model, ..., freeze_config=FreezeConfig(num_frozen_layers=2))
"""
from __future__ import annotations

from torch import nn

from .arch import resolve
from .config import FreezeConfig, FreezeConfigError

__all__ = ["base_model_for_freeze", "prefix_adapter_modules", "suffix_lora_kwargs"]


def _is_adapter_module(module: nn.Module) -> bool:
    """True for PEFT's injected layers (LoRA, IA3, ...) and its trainable-copy wrappers."""
    try:
        from peft.tuners.tuners_utils import BaseTunerLayer
    except ImportError:  # no peft: a PEFT model cannot exist either
        return False
    if isinstance(module, BaseTunerLayer):
        return True
    try:
        from peft.utils.other import AuxiliaryTrainingWrapper  # modules_to_save, trainable tokens (peft >= 0.15)
    except ImportError:
        from peft.utils.other import ModulesToSaveWrapper as AuxiliaryTrainingWrapper
    return isinstance(module, AuxiliaryTrainingWrapper)


def prefix_adapter_modules(base_model: nn.Module, num_frozen_layers: int) -> list[str]:
    """Names of adapter modules, or trainable parameters, inside the frozen prefix (embedding side +
    the bottom `num_frozen_layers` blocks) of a PEFT-injected transformers model; empty when clean.

    Usage:
        assert not prefix_adapter_modules(peft_model.get_base_model(), 2)
    """
    parts = resolve(base_model)
    prefix = [(p, m) for p, m in parts.embedding_side]
    prefix += [(parts.layer_path(i), parts.layers[i]) for i in range(min(num_frozen_layers, parts.num_layers))]
    found: list[str] = []
    for path, module in prefix:
        adapters = [f"{path}.{name}" if name else path for name, sub in module.named_modules() if _is_adapter_module(sub)]
        # Any other way of making a prefix weight trainable (a custom adapter type) is refused too.
        trainable = [f"{path}.{n}" for n, p in module.named_parameters() if p.requires_grad]
        found += adapters + [t for t in trainable if not any(t.startswith(a + ".") for a in adapters)]
    return found


def base_model_for_freeze(peft_model: nn.Module, config: FreezeConfig) -> nn.Module:
    """Check that `peft_model`'s adapters all sit in the trainable suffix of `config`, and return the
    wrapped transformers model, which `apply_freeze` splits into prefix and suffix.

    Raises FreezeConfigError naming the offending modules and the fix.

    Usage:
        base = base_model_for_freeze(get_peft_model(model, lora), FreezeConfig(num_frozen_layers=2))
    """
    get_base = getattr(peft_model, "get_base_model", None)
    if get_base is None:
        raise FreezeConfigError(f"{type(peft_model).__name__} is not a peft.PeftModel (no get_base_model()).")
    peft_config = getattr(peft_model, "active_peft_config", None)
    if peft_config is not None and getattr(peft_config, "is_prompt_learning", False):
        raise FreezeConfigError(
            f"{type(peft_config).__name__} is a prompt-learning adapter: its virtual tokens enter at the input, "
            "inside the frozen prefix, which runs without autograd, so they could never train. Use an adapter on "
            "the suffix layers instead (e.g. LoRA with layers_to_transform=range(k, num_layers))."
        )
    base = get_base()
    if not config.is_prefix:
        return base  # no no-grad prefix: adapters anywhere receive gradients through the plain freeze
    offending = prefix_adapter_modules(base, config.num_frozen_layers)
    if offending:
        shown = ", ".join(offending[:6]) + (f" (+{len(offending) - 6} more)" if len(offending) > 6 else "")
        raise FreezeConfigError(
            f"PEFT adapters sit in the frozen prefix (embedding + layers[:{config.num_frozen_layers}]): {shown}. "
            "The prefix runs without autograd (and may be served from a cache), so they would make the prefix "
            "trainable and then never train. Place adapters on the suffix only: "
            "LoraConfig(..., **fastfreeze.peft_support.suffix_lora_kwargs(model, k)) (layers_to_transform), and "
            "keep the embedding out of modules_to_save / trainable_token_indices."
        )
    return base


def suffix_lora_kwargs(model: nn.Module, num_frozen_layers: int) -> dict:
    """`layers_to_transform` / `layers_pattern` for a PEFT LoraConfig that puts adapters only on the
    blocks above the frozen prefix of `model` (a transformers model, before `get_peft_model`).

    Usage:
        LoraConfig(r=8, target_modules=["q_proj", "v_proj"], **suffix_lora_kwargs(model, 2))
    """
    parts = resolve(model)
    FreezeConfig(num_frozen_layers=num_frozen_layers).validate_for(parts.num_layers)
    if num_frozen_layers == parts.num_layers:
        raise FreezeConfigError(
            f"num_frozen_layers={num_frozen_layers} freezes every block, so there is no suffix block for an "
            "adapter; lower num_frozen_layers or train only the head (modules_to_save=['lm_head'])."
        )
    return {"layers_to_transform": list(range(num_frozen_layers, parts.num_layers)),
            "layers_pattern": parts.layers_path.rsplit(".", 1)[-1]}
