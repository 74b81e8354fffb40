"""Probe forwards: the model's own forward up to one module (`run_until`), in an exactly restored `eval_mode`.

Usage:
    with eval_mode(model), torch.no_grad():
        reach = run_until(lambda: model(**batch), model.model.layers[k])   # stops at block k's input
    reach.hidden                                                           # block k's hidden-state input
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

from torch import nn


class Stop(Exception):
    """Raised inside a forward to end it early (by `run_until`'s hook). A forward runner that turns a
    model's errors into refusals (`families.run_model`) must let it through."""


class _Reached(Stop):
    def __init__(self, token: object):
        super().__init__("the watched module was reached")
        self.token = token  # which run_until raised it: a nested one must not swallow an outer one's stop


@dataclass
class Reach:
    """What `run_until` saw at the watched module: its last call's inputs (and output when watched
    after it ran), how many calls, and what the forward returned (None when stopped)."""

    calls: int = 0
    args: tuple = ()
    kwargs: dict = field(default_factory=dict)
    output: Any = None
    result: Any = None
    stopped: bool = False

    @property
    def hidden(self):
        """The hidden-state input: the first positional argument, else the `hidden_states` keyword (None
        when the module was not reached)."""
        return self.args[0] if self.args else self.kwargs.get("hidden_states")


def run_until(run: Callable[[], Any], module: nn.Module, *, output: bool = False, stop: bool = True,
              on_reach: Callable[[Reach], None] | None = None) -> Reach:
    """Call `run()` (the model's own forward) with a hook on `module`; return what the hook saw.

    The hook fires when `module` is reached (`output=False`, before it runs) or once it has produced
    its output (`output=True`); it records the call, calls `on_reach(reach)`, and with `stop=True`
    ends the forward there (the rest of the model never runs). Any other exception propagates, and
    the hook is removed in every case.

    Usage: ``run_until(lambda: run_model(model, inputs), sink).hidden``
    """
    reach = Reach()
    token = object()

    def record(args, kwargs, out=None):
        reach.calls += 1
        reach.args, reach.kwargs, reach.output = args, kwargs, out
        if on_reach is not None:
            on_reach(reach)
        if stop:
            raise _Reached(token)

    if output:
        handle = module.register_forward_hook(lambda _m, a, k, o: record(a, k, o), with_kwargs=True)
    else:
        handle = module.register_forward_pre_hook(lambda _m, a, k: record(a, k), with_kwargs=True)
    try:
        reach.result = run()
    except _Reached as err:
        if err.token is not token:
            raise
        reach.stopped = True
    finally:
        handle.remove()
    return reach


@contextlib.contextmanager
def eval_mode(module: nn.Module) -> Iterator[nn.Module]:
    """Within the block `module` is in eval mode (`module.eval()`); after it (errors included) every
    submodule's `.training` is what it was, so a model with mixed modes (a fastfreeze prefix kept in
    eval while the rest trains, a user's eval-mode dropout) comes back exactly as it was.

    The restore goes through `train()` (parents first), as `model.train(was_training)` would, so the
    side effects some models attach to it still happen (transformers re-selects its hub kernels, PEFT's
    DoRA clears its cache); then any flag still off (a module's own `train()` refused it, or a module
    shared by two parents was flipped again) is set directly.

    Usage: ``with eval_mode(model): model(**batch)``
    """
    modes = [(m, m.training) for m in module.modules()]
    module.eval()
    try:
        yield module
    finally:
        for m, mode in modes:  # modules() lists parents before their children
            if m.training != mode:
                m.train(mode)
        for m, mode in modes:  # what a module's own train() does not set back (an always-eval prefix module)
            m.training = mode
