"""Probe forwards: a tiny probe batch (`probe_inputs`), the model's own forward on it with its errors turned into
refusals (`run_model`), and up to one module (`run_until`), in an exactly restored `eval_mode`.

Usage:
    with eval_mode(model), torch.no_grad():
        reach = run_until(lambda: model(**batch), model.model.layers[k])   # stops at block k's input
    reach.hidden                                                           # block k's hidden-state input
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

import torch
from torch import nn

from ._hf_compat import text_config
from .errors import UnsupportedModelError, meta_weights_refusal


class Stop(Exception):
    """Raised inside a forward to end it early (by `run_until`'s hook). A forward runner that turns a
    model's errors into refusals (`run_model` below) must let it through."""


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


def probe_inputs(model: nn.Module, batch: int = 1, seq: int = 8, pad: int = 0, seed: int = 0) -> dict:
    """A tiny deterministic batch for probe forwards: ids in [1, vocab), the last `pad` positions of
    the last row right-padded (mask 0, id 0)."""
    vocab = int(getattr(text_config(model.config), "vocab_size", None) or 100)
    device = next(model.parameters()).device
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, max(2, min(vocab, 30000)), (batch, seq), generator=g)
    mask = torch.ones(batch, seq, dtype=torch.long)
    if pad:
        ids[-1, seq - pad:] = 0
        mask[-1, seq - pad:] = 0
    return {"input_ids": ids.to(device), "attention_mask": mask.to(device)}


def run_model(model: nn.Module, inputs: dict):
    """The model's own forward on probe inputs, without a KV cache where the model takes `use_cache`.
    A model that cannot run the probe batch is refused with its own error, not crashed on; a probe's
    early stop (`trace.Stop`, see `trace.run_until`) passes through."""
    try:
        try:
            return model(**inputs, use_cache=False)
        except TypeError as err:
            if "use_cache" not in str(err):
                raise
            return model(**inputs)
    except (Stop, UnsupportedModelError):
        raise
    except Exception as err:
        if inputs["input_ids"].is_meta:  # not the inputs' fault: there are no weights to run
            raise UnsupportedModelError(
                meta_weights_refusal(model, "on the meta device, where its own forward fails on fastfreeze's "
                                     f"probe batch ({type(err).__name__}: {str(err).splitlines()[0][:200]})")
            ) from err
        raise UnsupportedModelError(
            f"{type(model).__name__}: fastfreeze's probe forward (a {tuple(inputs['input_ids'].shape)} batch of "
            f"token ids) fails in the model's own code: {type(err).__name__}: {str(err).splitlines()[0][:300]}. "
            "fastfreeze proves its split on such a batch before training; a model that needs other inputs "
            "cannot be checked, so it is refused."
        ) from err
