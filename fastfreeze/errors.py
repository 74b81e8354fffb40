"""The refusal every layer raises (UnsupportedModelError) and the one message for weights on `meta`."""
from __future__ import annotations

from torch import nn


class UnsupportedModelError(ValueError):
    """The model's structure is not one fastfreeze can split into a frozen prefix and a trainable suffix."""


def meta_weights_refusal(model: nn.Module, where: str = "on the meta device (shapes, no values)") -> str:
    """The refusal for a model whose weights are on `meta` where fastfreeze must run it: says so, and how
    to load them. `where` completes "its weights are ..."."""
    return (
        f"{type(model).__name__}: its weights are {where}, so fastfreeze cannot run it in this process (it "
        "proves its split on a probe forward, and so would training). Load real weights first: "
        "AutoModelForCausalLM.from_pretrained(path) (without device_map='meta'); or model.to_empty(device=...) "
        "then model.load_state_dict(state_dict); or, across several processes, FSDP2 with RAM-efficient "
        "loading, which fastfreeze supports: TrainingArguments(fsdp='full_shard auto_wrap', fsdp_config="
        "{**fastfreeze.integrations.distributed.fsdp_config(model), 'cpu_ram_efficient_loading': True}) "
        "(rank 0 loads the weights, the other ranks start on meta and are filled when train() starts).")
