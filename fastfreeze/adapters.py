"""PEFT-wrapped models in `apply_freeze`: the base model to split, and adapters refused inside the frozen prefix.

A frozen prefix runs with no autograd and may be served from a cache, so nothing in it may train.
An adapter placed on a prefix module (LoRA on `layers.0.q_proj`, `modules_to_save=["embed_tokens"]`,
trainable token indices, prompt/prefix tuning, which act at the input) would be silently cut off
from its gradient, so it is refused here with the fix. Building a config whose adapters land on the
suffix: `fastfreeze.integrations.peft`.

Usage:
    base = base_model_for_freeze(get_peft_model(model, lora), FreezeConfig(num_frozen_layers=2))
    assert not prefix_adapter_modules(peft_model.get_base_model(), 2)
"""
from __future__ import annotations

from torch import nn

from ._hf_compat import peft_adapter_types
from .config import FreezeConfig, FreezeConfigError
from .families import resolve

__all__ = ["base_model_for_freeze", "prefix_adapter_modules"]


def _is_adapter_module(module: nn.Module) -> bool:
    """True for PEFT's injected layers (LoRA, IA3, ...) and its trainable-copy wrappers."""
    types = peft_adapter_types()
    return bool(types) and isinstance(module, types)


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
        regex = isinstance(getattr(peft_config, "target_modules", None), str)
        fix = ("target_modules is a regular expression: make it match only layers "
               f"{config.num_frozen_layers} and up, or pass a list of module names with "
               "**fastfreeze.integrations.peft.suffix_lora_kwargs(model, k)" if regex else
               "LoraConfig(..., **fastfreeze.integrations.peft.suffix_lora_kwargs(model, k)) (layers_to_transform)")
        raise FreezeConfigError(
            f"PEFT adapters sit in the frozen prefix (embedding + layers[:{config.num_frozen_layers}]): {shown}. "
            "The prefix runs without autograd (and may be served from a cache), so they would make the prefix "
            f"trainable and then never train. Place adapters on the suffix only: {fix}, and "
            "keep the embedding out of modules_to_save / trainable_token_indices. (FastFreezeSFTTrainer narrows "
            "a `peft_config=` with a list of target modules to the suffix by itself.)"
        )
    return base
