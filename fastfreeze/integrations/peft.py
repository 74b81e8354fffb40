"""PEFT adapters on the trainable suffix only: the LoRA arguments that put them there, and narrowing a config.

A frozen prefix runs with no autograd and may be served from a cache, so nothing in it may train.
`apply_freeze` accepts a PeftModel and refuses adapters placed in the prefix, with the fix
(`fastfreeze.adapters`, part of the core). Here, for building the config: `suffix_lora_kwargs` gives
`layers_to_transform` for blocks k..L-1.

A config that is not applied yet (TRL's `--use_peft --lora_target_modules q_proj v_proj`, which
puts LoRA on every block) can instead be narrowed to the suffix: `restrict_to_suffix` adds
`layers_to_transform` for blocks k..L-1; FastFreezeSFTTrainer does that for its `peft_config=`.

Usage:
    lora = LoraConfig(target_modules=["q_proj", "v_proj"], **suffix_lora_kwargs(model, k=2))
    peft_model = get_peft_model(model, lora)
    trainer = FastFreezeTrainer(model=peft_model, ..., freeze_config=FreezeConfig(num_frozen_layers=2))

    lora, note = restrict_to_suffix(LoraConfig(target_modules=["q_proj", "v_proj"]), model, 2)
"""
from __future__ import annotations

import copy

from torch import nn

from .._hf_compat import linear_types, peft_default_targets
from ..config import FreezeConfig, FreezeConfigError
from ..families import resolve

__all__ = ["restrict_to_suffix", "suffix_lora_kwargs"]


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


def _target_names(peft_config, model: nn.Module):
    """The config's target module names as a list (PEFT's per-architecture default for None, the linear
    layers of a block for "all-linear"); None when they are a regular expression."""
    targets = getattr(peft_config, "target_modules", None)
    if targets is None:
        return peft_default_targets(getattr(getattr(model, "config", None), "model_type", None))
    if isinstance(targets, str):
        if targets.lower() != "all-linear":
            return None
        block = resolve(model).layers[0]
        return sorted({n.rsplit(".", 1)[-1] for n, m in block.named_modules() if n and isinstance(m, linear_types())})
    return sorted(targets)


def _matches(key: str, names) -> bool:
    return any(key == n or key.endswith(f".{n}") for n in names)


def restrict_to_suffix(peft_config, model: nn.Module, num_frozen_layers: int):
    """Narrow a PEFT config that is not applied yet so its adapters land only on the trainable blocks
    above a frozen prefix of `num_frozen_layers` blocks. Returns (config, note): a copy with
    `layers_to_transform=[k, ..., L-1]` and `layers_pattern` set, and a sentence saying what changed;
    or the config itself and None when none of its targets is in the prefix (or it has no targets, or
    they are a regular expression, which `base_model_for_freeze` checks once applied).

    "all-linear" and a None target list (PEFT's default for the architecture) become the explicit
    module names. Refused (FreezeConfigError, with the fix): targets on the embedding side, and a
    `layers_to_transform` the user set that includes frozen blocks.

    Usage (what TRL's `--use_peft --lora_target_modules q_proj v_proj` builds):
        lora, note = restrict_to_suffix(LoraConfig(target_modules=["q_proj", "v_proj"]), model, 2)
        # lora.layers_to_transform == [2, 3] on a 4-layer model
    """
    if not hasattr(peft_config, "layers_to_transform") or not hasattr(peft_config, "target_modules"):
        return peft_config, None  # not a layer-targeting adapter type (prompt learning is refused later)
    parts = resolve(model)
    names = _target_names(peft_config, model)
    if names is None:
        return peft_config, None
    k, num_layers = num_frozen_layers, parts.num_layers
    in_prefix = sorted({f"{path}.{n}" if n else path for path, module in parts.embedding_side
                        for n, _ in module.named_modules() if _matches(f"{path}.{n}" if n else path, names)})
    if in_prefix:
        raise FreezeConfigError(
            f"peft_config targets modules of the frozen embedding side: {in_prefix[:4]}. They are frozen by the "
            "freeze and run without autograd, so an adapter there could never train; remove them from "
            "target_modules (the blocks above the prefix can carry adapters).")
    hit = [i for i in range(min(k, num_layers))
           if any(_matches(f"{parts.layer_path(i)}.{n}", names) for n, _ in parts.layers[i].named_modules() if n)]
    if not hit:
        return peft_config, None
    chosen = peft_config.layers_to_transform
    if chosen is not None:
        chosen = [chosen] if isinstance(chosen, int) else list(chosen)
        frozen = [i for i in chosen if i < k]
        if frozen:
            raise FreezeConfigError(
                f"peft_config.layers_to_transform={chosen} includes frozen blocks {frozen} (num_frozen_layers={k}); "
                "adapters there could never train. Use "
                f"layers_to_transform={[i for i in chosen if i >= k] or list(range(k, num_layers))}, "
                "e.g. **fastfreeze.integrations.peft.suffix_lora_kwargs(model, k).")
        return peft_config, None
    kwargs = suffix_lora_kwargs(model, num_frozen_layers)  # refuses k == num_layers: no block to adapt
    # layers_to_transform drops every target without a block index, except one named by its full path:
    # keep targets outside the blocks (above the prefix, e.g. a projection before the head) by full path.
    in_blocks = f"{parts.layers_path}."
    outside = sorted(key for key, _ in model.named_modules() if key and not key.startswith(in_blocks)
                     and key not in names and _matches(key, names))
    narrowed = copy.deepcopy(peft_config)
    narrowed.target_modules = set(names) | set(outside)
    narrowed.layers_to_transform = kwargs["layers_to_transform"]
    narrowed.layers_pattern = kwargs["layers_pattern"]
    note = (f"fastfreeze: peft_config puts adapters on {', '.join(names)} in every block, but "
            f"{_blocks(0, k - 1)} {'is' if k == 1 else 'are'} frozen (FreezeConfig(num_frozen_layers={k})) and "
            f"run{'s' if k == 1 else ''} without autograd, so the adapters go on {_blocks(k, num_layers - 1)} only "
            f"(layers_to_transform={narrowed.layers_to_transform}, layers_pattern={narrowed.layers_pattern!r}). "
            "Set layers_to_transform yourself to choose other blocks.")
    return narrowed, note


def _blocks(first: int, last: int) -> str:
    return f"block {first}" if first == last else f"blocks {first}-{last}"
