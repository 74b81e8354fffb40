"""What stands in for a frozen prefix module's output once an injected boundary makes its work useless.

A prefix module's output form is recorded on its first computed run as an `OutputSpec`
(`fastfreeze.prefix` keeps it on the module as `_ff_spec`). Under injection the modules before the
boundary source need not compute: a module that is still called returns a placeholder of that form
(`placeholder_output`), and on a whole-batch cache hit a parameter-free `StandIn` takes the module's
place in its parent, returning a stride-0 view of one scalar (`standin_output`), so nothing of size
[B, T, H] is made. The suffix never reads these placeholders: the install probe fills them with NaN
to prove it (`fastfreeze.probe`), or refuses the cache.

Usage:
    spec = output_spec(first_input, output)          # on a computed run; None: the module just runs
    standin_output(spec, first_input, fill=0.0)      # what stands in for `output` under injection
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


def first_arg(args, kwargs):
    """A module call's first argument (positional, else the first keyword), None when it has none."""
    return args[0] if args else next(iter(kwargs.values()), None)


@dataclass(frozen=True)
class OutputSpec:
    """A prefix module's output form, recorded on its first computed run: how to stand in for that
    output when an injected boundary makes its work useless. `kind` "pass": the output is the input
    itself; "fill": a tensor of the input's leading shape + `tail`, of `dtype`. `container`: None for
    a bare tensor, else the tuple or list type of a `length`-item output whose first item is the
    hidden state and whose extra items become None (the install probe proves the suffix does not
    read them, or refuses the cache)."""

    kind: str
    container: type | None = None
    length: int = 0
    tail: tuple = ()
    dtype: torch.dtype | None = None


def items(out) -> int:
    """How many items a tuple / list output holds (0 for a bare tensor or an empty container)."""
    return len(out) if isinstance(out, (tuple, list)) else 0


def hidden(out):
    """The hidden state of a module output (a bare tensor, or the first item of a tuple / list)."""
    return out[0] if items(out) else out


def output_spec(first, out) -> OutputSpec | None:
    """The `OutputSpec` of a module that took `first` and returned `out`; None when the output's shape
    is not derived from the input (the module then simply runs)."""
    n = items(out)
    tensor = out[0] if n else out
    if not (isinstance(first, torch.Tensor) and isinstance(tensor, torch.Tensor)):
        return None
    form = dict(container=type(out) if n else None, length=n)
    if tensor.shape == first.shape and tensor.dtype == first.dtype:
        return OutputSpec("pass", **form)
    if tuple(tensor.shape[:first.dim()]) != tuple(first.shape):
        return None
    return OutputSpec("fill", tail=tuple(tensor.shape[first.dim():]), dtype=tensor.dtype, **form)


def as_output(tensor: torch.Tensor, spec: OutputSpec | None):
    """`tensor` in the recorded output form (bare when there is no record)."""
    if spec is None or spec.container is None:
        return tensor
    return spec.container([tensor, *([None] * (spec.length - 1))])


def placeholder_output(spec: OutputSpec | None, first, fill: float):
    """What a prefix module that is still called under injection returns instead of computing (a
    materialized tensor: the called path may hand it to hooks); None when it has to run after all."""
    if spec is None or not isinstance(first, torch.Tensor):
        return None
    if spec.kind == "pass":
        return as_output(first, spec)
    value = fill if spec.dtype.is_floating_point else 0
    return as_output(torch.full((*first.shape, *spec.tail), value, dtype=spec.dtype, device=first.device), spec)


def standin_output(spec: OutputSpec, first, fill: float):
    """A prefix module's stand-in output as a stride-0 view of one scalar: the suffix never reads
    it (the install probe fills it with NaN to prove that), so nothing of size [B, T, H] is made."""
    if spec.kind == "pass":
        return as_output(first, spec)
    value = fill if spec.dtype.is_floating_point else 0
    scalar = torch.full((), value, dtype=spec.dtype, device=first.device)
    return as_output(scalar.expand(*first.shape, *spec.tail), spec)


class StandIn(nn.Module):
    """Takes a prefix module's place in its parent during a whole-batch cache hit
    (`FrozenPrefix.inject`): no parameters, no hooks, the recorded output form. The boundary source's
    stand-in returns the injected boundary. `state` is the prefix's run state, read at call time
    (`injected`: the boundary; `fill`: the placeholder value), so one stand-in serves every step."""

    def __init__(self, original: nn.Module, spec: OutputSpec | None, state, source: bool):
        super().__init__()
        self.spec, self.state, self.source = spec, state, source
        self.__dict__["original"] = original  # a plain attribute: its parameters must not show here

    @torch.compiler.disable
    def forward(self, *args, **kwargs):
        if self.source:
            return as_output(self.state.injected, self.spec)
        first = first_arg(args, kwargs)
        if not isinstance(first, torch.Tensor):  # an output form the recorded spec cannot derive
            return self.original(*args, **kwargs)
        return standin_output(self.spec, first, self.state.fill)


class StandIns:
    """The stand-ins of a prefix's modules (`names[i]`: where `modules[i]` sits in `model`; the last one
    is the boundary source), each made once: torch.compile guards on the modules a compiled forward
    calls, so a fresh stand-in every warm step would recompile every step (and hit the recompile limit)."""

    def __init__(self, model: nn.Module, names: list[str], modules: list[nn.Module], state):
        self.model, self.names, self.modules, self.state = model, names, modules, state
        self._made: dict[int, StandIn] = {}

    def _slots(self):
        """(parent, attribute name, prefix module) for each prefix module, where its parent holds it."""
        for path, m in zip(self.names, self.modules):
            parent_path, _, name = path.rpartition(".")
            yield (self.model.get_submodule(parent_path) if parent_path else self.model), name, m

    def swap_in(self, swapped: list, only) -> None:
        """Replace in its parent the boundary source and each prefix module whose output form is known
        (`_ff_spec`: it ran once) and that is in `only` (None: every one), appending (parent, name,
        original) to `swapped` as each one is made, in swap order (the caller undoes them)."""
        source = self.modules[-1]
        for parent, name, m in self._slots():
            spec = m.__dict__.get("_ff_spec")
            if m is not source and (spec is None or (only is not None and m not in only)):
                continue
            if getattr(parent, name, None) is not m:
                continue  # not reachable by this name (already swapped, or wrapped): it just runs
            standin = self._made.get(id(m))
            if standin is None or standin.spec is not spec:
                standin = self._made[id(m)] = StandIn(m, spec, self.state, m is source)
            setattr(parent, name, standin)
            swapped.append((parent, name, m))
            self.state.standin_calls += 1

    def restore_left_in_place(self) -> None:
        """Put back every prefix module that a stand-in still replaces in its parent (an injection
        left without its exit: a generator dropped mid-step)."""
        for parent, name, m in self._slots():
            current = getattr(parent, name, None)
            if current is not m and getattr(current, "__dict__", {}).get("original") is m:  # our stand-in
                setattr(parent, name, m)
