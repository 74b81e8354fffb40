"""The plain freeze: select the embedding + bottom k blocks by module index, handle tied weights, report.

Usage:
    report = freeze_bottom_layers(model, num_frozen_layers=6)
    print(report)        # what is frozen / trainable, parameter counts and percentages
"""
from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass, field

import torch
from torch import nn

from ._hf_compat import full_numel, text_config, zero3_gathered_per_module, zero3_partitioned
from .families import ModelParts, resolve
from .config import FreezeConfig, FreezeConfigError
from .trace import eval_mode, probe_inputs, run_model, run_until

logger = logging.getLogger(__name__)


@dataclass
class FreezeReport:
    """What a freeze did. Printable; `to_dict()` for logs."""

    family: str
    num_layers: int
    num_frozen_layers: int
    frozen_modules: list[str]
    trainable_modules: list[str]
    frozen_params: int
    trainable_params: int
    head_tied_to_embedding: bool
    head_trainable: bool
    notes: list[str] = field(default_factory=list)
    # Module or parameter name -> why it is frozen beyond the recipe (input embedding + blocks[:k]).
    extra_frozen: dict[str, str] = field(default_factory=dict)
    # Set where the model trains (fastfreeze.runtime.complete_freeze); None before that.
    kernel_set: str | None = None
    device: str | None = None

    @property
    def total_params(self) -> int:
        return self.frozen_params + self.trainable_params

    @property
    def frozen_fraction(self) -> float:
        return self.frozen_params / max(1, self.total_params)

    def to_dict(self) -> dict:
        return {
            "family": self.family, "num_layers": self.num_layers, "num_frozen_layers": self.num_frozen_layers,
            "frozen_modules": self.frozen_modules, "trainable_modules": self.trainable_modules,
            "frozen_params": self.frozen_params, "trainable_params": self.trainable_params,
            "frozen_fraction": self.frozen_fraction, "head_tied_to_embedding": self.head_tied_to_embedding,
            "head_trainable": self.head_trainable, "notes": self.notes, "extra_frozen": self.extra_frozen,
            "kernel_set": self.kernel_set, "device": self.device,
        }

    def __str__(self) -> str:
        pct = 100.0 * self.frozen_fraction
        lines = [
            f"fastfreeze: {self.family}, {self.num_layers} layers, bottom {self.num_frozen_layers} frozen",
            f"  frozen    {self.frozen_params:>14,d} params ({pct:5.1f}%): {_compact(self.frozen_modules)}",
            f"  trainable {self.trainable_params:>14,d} params ({100 - pct:5.1f}%): {_compact(self.trainable_modules)}",
        ]
        if self.head_tied_to_embedding:
            state = "trainable (untied)" if self.head_trainable else "frozen with the embedding (tied)"
            lines.append(f"  LM head shares the embedding matrix: {state}")
        lines += [f"  ALSO FROZEN {n}: {r}" for n, r in self.extra_frozen.items()]
        if self.kernel_set is None:
            lines.append("  kernels: not chosen yet (decided where the model trains, when training starts)")
        else:
            lines.append(f"  kernels: {self.kernel_set} on {self.device}")
        lines += [f"  note: {n}" for n in self.notes if not n.startswith("also frozen beyond")]
        return "\n".join(lines)


def _compact(names: list[str]) -> str:
    """Collapse consecutive `x.layers.i` names into `x.layers.[a-b]` for a readable report."""
    out, run = [], []

    def flush():
        if run:
            prefix = run[0][0]
            out.append(f"{prefix}.{run[0][1]}" if len(run) == 1 else f"{prefix}.[{run[0][1]}-{run[-1][1]}]")
            run.clear()

    for name in names:
        head, _, tail = name.rpartition(".")
        if tail.isdigit() and run and run[-1][0] == head and run[-1][1] + 1 == int(tail):
            run.append((head, int(tail)))
            continue
        flush()
        if tail.isdigit():
            run.append((head, int(tail)))
        else:
            out.append(name)
    flush()
    return ", ".join(out) if out else "-"


def head_is_tied(parts: ModelParts) -> bool:
    emb = parts.embedding_side[0][1]
    w_emb, w_head = getattr(emb, "weight", None), getattr(parts.head, "weight", None)
    return w_emb is not None and w_head is not None and w_emb is w_head


def untie_head(model: nn.Module, parts: ModelParts) -> None:
    """Give the LM head its own copy of the shared embedding matrix, and record it in the config so
    a saved model loads untied (without fastfreeze)."""
    head = parts.head
    head.weight = nn.Parameter(head.weight.detach().clone(), requires_grad=True)
    for cfg in {id(c): c for c in (model.config, text_config(model.config))}.values():
        cfg.tie_word_embeddings = False


def frozen_module_names(parts: ModelParts, num_frozen_layers: int, freeze_embeddings: bool) -> list[str]:
    names = [p for p, _ in parts.embedding_side] if freeze_embeddings else []
    return names + [parts.layer_path(i) for i in range(num_frozen_layers)]


REASON_BEFORE_BLOCK0 = ("runs before block 0 (execution order), so it is part of the frozen prefix whose "
                        "output the cache stores")
REASON_FEEDS_BOUNDARY = ("feeds the boundary (its gradient reaches block k's input), so it is part of the "
                         "frozen prefix")


def boundary_dependencies(model: nn.Module, parts: ModelParts, num_frozen_layers: int) -> list[str]:
    """Names of trainable parameters the boundary (block k's input) depends on: those autograd would
    reach from it, found by walking the graph of a probe forward that stops at block k (no backward,
    so it also runs on a DeepSpeed ZeRO-3 model partitioned at load, each module's weights gathered
    only during its own forward). Bare parameters of the base model (not in any module that runs
    before block 0) show up here too."""
    k = num_frozen_layers
    sink = parts.layers[k] if k < parts.num_layers else parts.final_norm
    if sink is None:
        return []
    with eval_mode(model), torch.enable_grad(), zero3_gathered_per_module(model):
        h = run_until(lambda: run_model(model, probe_inputs(model)), sink).hidden
    h = h[0] if isinstance(h, (tuple, list)) else h
    if not isinstance(h, torch.Tensor) or not h.requires_grad:
        return []
    reached = _graph_leaves(h)
    return [n for n, p in model.named_parameters() if p.requires_grad and id(p) in reached]


def _graph_leaves(t: torch.Tensor) -> set[int]:
    """ids of the leaf tensors (parameters) whose gradient backward from `t` would accumulate: the
    `variable` of every AccumulateGrad node reachable from t.grad_fn."""
    seen, stack, leaves = set(), [t.grad_fn], set()
    while stack:
        fn = stack.pop()
        if fn is None or fn in seen:
            continue
        seen.add(fn)
        variable = getattr(fn, "variable", None)
        if isinstance(variable, torch.Tensor):
            leaves.add(id(variable))
        stack.extend(nxt for nxt, _ in fn.next_functions)
    return leaves


def _apply_frozen(model: nn.Module, names: list[str]) -> None:
    """requires_grad=False on each named module's parameters, or on the named parameter itself."""
    modules = dict(model.named_modules())
    for name in names:
        params = modules[name].parameters() if name in modules else [model.get_parameter(name)]
        for p in params:
            p.requires_grad_(False)


def _extras(model: nn.Module, parts: ModelParts, recipe: set[int], deps: list[str]) -> dict[str, str]:
    """What is frozen beyond the recipe (input embedding + blocks[:k]), each with its reason."""
    extra: dict[str, str] = {}
    covered: set[int] = set(recipe)
    for name, mod in parts.embedding_side:
        own = [(f"{name}.{n}", p) for n, p in mod.named_parameters() if id(p) not in recipe]
        if not own:
            continue
        if len(own) == len(list(mod.parameters())):
            extra[name] = REASON_BEFORE_BLOCK0
        else:  # the module also holds the input embedding: list the rest by parameter
            extra.update({n: REASON_BEFORE_BLOCK0 for n, _ in own})
        covered |= {id(p) for _, p in own}
    params = dict(model.named_parameters())
    extra.update({n: REASON_FEEDS_BOUNDARY for n in deps if id(params[n]) not in covered})
    return extra


def _trainable_modules(model: nn.Module, prefix: str = "") -> list[str]:
    """Outermost modules whose parameters all train (recursing into partly trainable ones)."""
    out = []
    for name, child in model.named_children():
        full = f"{prefix}.{name}" if prefix else name
        ps = list(child.parameters())
        if not ps or not any(p.requires_grad for p in ps):
            continue
        if all(p.requires_grad for p in ps):
            out.append(full)
        else:
            out += _trainable_modules(child, full)
    return out


def freeze_bottom_layers(
    model: nn.Module,
    num_frozen_layers: int,
    freeze_embeddings: bool = True,
    untie_embeddings: bool = False,
    parts: ModelParts | None = None,
) -> FreezeReport:
    """Freeze the input embedding and decoder blocks `0 .. num_frozen_layers-1` by module index.

    Unlike name-substring matching ("layers.1" also hits layers 10-19), blocks are selected by their
    position in the block ModuleList. With `freeze_embeddings`, everything that runs before block 0
    (execution order) and every parameter the boundary depends on is frozen too, since the frozen
    prefix must be a closed computation; `FreezeReport.extra_frozen` names each such part and why.
    Only `requires_grad=False` is ever set: what the model had frozen stays frozen. Raises
    FreezeConfigError (with the fix) for k out of range or nothing left to train.

    Usage:
        report = freeze_bottom_layers(model, 6); print(report)
    """
    config = FreezeConfig(num_frozen_layers=num_frozen_layers, freeze_embeddings=freeze_embeddings,
                          untie_embeddings=untie_embeddings)  # validates k >= 0
    return freeze_by_config(model, config, parts, stacklevel=3)


def freeze_by_config(model: nn.Module, config: FreezeConfig, parts: ModelParts | None = None, *,
                     stacklevel: int = 2) -> FreezeReport:
    """`freeze_bottom_layers` for a FreezeConfig (validated when it was built; only its depth is checked here).
    A warning points `stacklevel` frames up, as `warnings.warn` counts (2: this function's caller).

    Usage:
        report = freeze_by_config(model, FreezeConfig(num_frozen_layers=6))
    """
    num_frozen_layers, freeze_embeddings = config.num_frozen_layers, config.freeze_embeddings
    parts = parts or resolve(model)
    config.validate_for(parts.num_layers)
    tied = head_is_tied(parts)
    notes = _tied_head_notes(model, parts, tied and freeze_embeddings, config.untie_embeddings, stacklevel + 1)
    frozen_names, extra = _freeze(model, parts, num_frozen_layers, freeze_embeddings)
    if extra:
        msg = "also frozen beyond the embedding + layers[:k]: " + "; ".join(f"{n} ({r})" for n, r in extra.items())
        logger.warning("fastfreeze: %s", msg)
        notes.append(msg)
    # full_numel: a ZeRO-3 placeholder counts as the whole parameter it stands for (ds_numel).
    n_frozen = sum(full_numel(p) for p in _unique_params(model) if not p.requires_grad)
    n_train = sum(full_numel(p) for p in _unique_params(model) if p.requires_grad)
    if n_train == 0:
        raise FreezeConfigError(
            f"Freezing the embedding and {num_frozen_layers} of {parts.num_layers} layers leaves nothing to "
            "train (the head is tied or frozen and no module above the frozen blocks has trainable "
            "parameters). Lower num_frozen_layers or pass untie_embeddings=True."
        )
    head_trainable = any(p.requires_grad for p in parts.head.parameters())
    report = FreezeReport(
        family=parts.family, num_layers=parts.num_layers, num_frozen_layers=num_frozen_layers,
        frozen_modules=frozen_names, trainable_modules=_trainable_modules(model), frozen_params=n_frozen,
        trainable_params=n_train, head_tied_to_embedding=tied, head_trainable=head_trainable, notes=notes,
        extra_frozen=extra,
    )
    logger.debug("%s", report)  # the trainer logs it at INFO once per train()
    return report


def _tied_head_notes(model: nn.Module, parts: ModelParts, tied_and_frozen: bool, untie: bool,
                     stacklevel: int) -> list[str]:
    """A head tied to the frozen embedding: untie it (untie_embeddings=True) or warn that it is frozen too."""
    if tied_and_frozen and untie:
        if zero3_partitioned(parts.head.weight):
            raise FreezeConfigError(
                "untie_embeddings=True needs the head's full weight, but DeepSpeed ZeRO-3 partitioned it at load "
                "(zero.Init). Untie before training instead: load the model without the ZeRO-3 config, set "
                "config.tie_word_embeddings=False, save it, and train from that copy.")
        untie_head(model, parts)
        return ["untied the LM head from the embedding (untie_embeddings=True): the head trains"]
    if tied_and_frozen:
        msg = ("the LM head is tied to the input embedding, so freezing the embedding freezes the head too; "
               "pass untie_embeddings=True to let the head train")
        warnings.warn("fastfreeze: " + msg, stacklevel=stacklevel + 1)  # at the caller of the public function
        return [msg]
    return []


def _freeze(model: nn.Module, parts: ModelParts, k: int, freeze_embeddings: bool) -> tuple[list[str], dict[str, str]]:
    """Set requires_grad=False on the recipe (embedding side + blocks[:k]) and, for a prefix, on everything
    the boundary depends on; returns the frozen module names and the extras (name -> reason)."""
    recipe_modules = ([model.get_input_embeddings()] if freeze_embeddings else []) + [parts.layers[i] for i in range(k)]
    recipe = {id(p) for m in recipe_modules for p in m.parameters()}
    frozen_names = frozen_module_names(parts, k, freeze_embeddings)
    _apply_frozen(model, frozen_names)
    extra: dict[str, str] = {}
    if freeze_embeddings:
        deps = boundary_dependencies(model, parts, k)
        _apply_frozen(model, deps)
        extra = _extras(model, parts, recipe, deps)
        frozen_names += [n for n, r in extra.items() if r is REASON_FEEDS_BOUNDARY]
    return frozen_names, extra


def _unique_params(model: nn.Module):
    seen: set[int] = set()
    for p in model.parameters():  # parameters() already de-duplicates shared tensors; keep it explicit
        if id(p) not in seen:
            seen.add(id(p))
            yield p
