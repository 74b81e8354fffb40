"""The paper's freeze sets as its official code ran them: parameter names matched by *substring*.

The official code (zzz47zzz/spurious-forgetting, `utils/optimizer.py`) freezes a parameter when any
entry of the config's `SEQ_freeze_component_list` is a substring of its name (`if _freeze_n in n`).
So `'layers.1'` also freezes `layers.10`-`layers.19`: the safety config `Freeze-6layers.yaml`
(`embed_tokens, layers.0 ... layers.5`) freezes blocks 0-5 *and* 10-31 of 32-layer LLaMA-2, i.e.
28 of 32 blocks. This module reproduces that rule as a documented *reproduction aid* for arms that
compare against the paper's numbers. It is never a default: `freeze_bottom_layers` and
`FreezeConfig` stay index-exact.

Usage: `frozen = apply_substring_freeze(model, PAPER_SETS["freeze-6layers"])` (plain
`requires_grad=False`, to train with a plain Trainer).
"""
from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

# The lists as the official configs spell them (config/CIT/safety_alignment_llama2_task2/*.yaml).
PAPER_SETS: dict[str, tuple[str, ...]] = {
    "freeze-3layers": ("embed_tokens", "layers.0", "layers.1", "layers.2"),
    "freeze-6layers": ("embed_tokens",) + tuple(f"layers.{i}" for i in range(6)),
}

_BLOCK = re.compile(r"(?:^|\.)layers\.(\d+)\.")


def block_index(name: str) -> int | None:
    """The decoder block a parameter name belongs to (`model.layers.3.mlp...` -> 3), None outside the blocks."""
    m = _BLOCK.search(name)
    return int(m.group(1)) if m else None


def substring_frozen_names(names: Iterable[str], patterns: Sequence[str]) -> list[str]:
    """The parameter names the official rule freezes: those containing any pattern as a substring."""
    if not patterns or any(not isinstance(p, str) or not p for p in patterns):
        raise ValueError(f"patterns must be non-empty strings, got {list(patterns)!r}.")
    return [n for n in names if any(p in n for p in patterns)]


def frozen_block_indices(names: Iterable[str], patterns: Sequence[str]) -> list[int]:
    """Indices of decoder blocks with at least one parameter frozen by the substring rule."""
    return sorted({b for b in map(block_index, substring_frozen_names(names, patterns)) if b is not None})


def apply_substring_freeze(model, patterns: Sequence[str]) -> list[str]:
    """Set `requires_grad=False` on every parameter the official rule freezes; returns their names.

    Refuses (ValueError) a list that matches nothing, which is a typo, not a freeze.
    """
    params = dict(model.named_parameters())
    frozen = substring_frozen_names(params, patterns)
    if not frozen:
        raise ValueError(f"freeze patterns {list(patterns)!r} match no parameter name of this model; "
                         f"names look like {next(iter(params), '<none>')!r}.")
    for name in frozen:
        params[name].requires_grad_(False)
    return frozen


def freeze_record(frozen: Sequence[str], patterns: Sequence[str]) -> dict:
    """What a run records of an as-ran freeze: the patterns, how many parameters, which blocks, the embedding."""
    return {"patterns": list(patterns), "frozen_parameters": len(frozen),
            "frozen_blocks": frozen_block_indices(frozen, patterns),
            "embedding_frozen": any("embed_tokens" in n for n in frozen)}
