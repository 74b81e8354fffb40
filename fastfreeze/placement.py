"""Where the model trains: whether a trainer's model is placed yet, and the hand-over that completes a deferred freeze at train start.

A trainer receives the model before it is where it trains: a script loads it on the CPU and
Trainer.__init__ moves it to `args.device`; under FSDP / DeepSpeed accelerate moves it (and, for
ranks loaded on `meta` under FSDP RAM-efficient loading, fills it from rank 0) only when train()
starts. `FreezeMixin` freezes at construction (the optimizer reads `requires_grad`) and completes the
freeze (kernel set, kernels, prefix trace, probe, cache fingerprint: `runtime.complete_freeze`) as
soon as `placed_for_training` says so, else from `CompleteFreezeAtTrainBegin`, which calls back what
the trainer hands it (this module knows no trainer internals).

Usage (FreezeMixin does this):
    refuse_meta_weights(model, args)                 # before anything else: no one will fill them
    if placed_for_training(trainer): complete()
    else: defer_freeze(trainer, complete)            # complete(): called once train() placed the model
"""
from __future__ import annotations

import logging
import os
from collections.abc import Callable

import torch
from transformers import TrainerCallback

from ._dist import ranks_agree
from .errors import UnsupportedModelError, meta_weights_refusal
from .runtime import parameter_device, zero3_state

logger = logging.getLogger(__name__)


def same_device(a: torch.device, b: torch.device) -> bool:
    a, b = torch.device(a), torch.device(b)
    return a.type == b.type and (a.index or 0) == (b.index or 0)


class DeferredCollator:
    """The collator Trainer's DataLoader holds when the cache opens only at train start: it calls
    `inner`, the user's collator until the trainer puts the cache's collator there. Picklable."""

    def __init__(self, inner):
        self.inner = inner

    def __call__(self, features):
        return self.inner(features)


class CompleteFreezeAtTrainBegin(TrainerCallback):
    """Completes a deferred freeze when training starts: Trainer fires on_train_begin after
    accelerate wrapped the model (FSDP: sharded and, for ranks loaded on meta, filled from rank 0;
    DeepSpeed: on its device), before the first forward; every rank gets here together.
    `complete()`: the trainer's completion, which does nothing once the freeze is complete."""

    def __init__(self, complete: Callable[[], None]):
        self.complete = complete

    def on_train_begin(self, args, state, control, **kwargs):
        self.complete()


def meta_weights_filled_at_train_start(args) -> bool:
    """Whether accelerate fills a rank's meta weights when train() starts: FSDP across several processes
    (RAM-efficient loading: rank 0 loads, the others are filled from it). Nothing fills them in one process."""
    fsdp = bool(getattr(args, "fsdp", None)) or os.environ.get("ACCELERATE_USE_FSDP", "").lower() in ("1", "true")
    return fsdp and getattr(args, "world_size", 1) > 1


def refuse_meta_weights(model: torch.nn.Module, args) -> None:
    """Refuse, naming meta weights and how to load them, a model whose weights are on `meta` where
    nothing will fill them (one process, or no FSDP): otherwise its first forward fails (fastfreeze's
    probe or Trainer's move) with a message about something else. `args`: the trainer's TrainingArguments."""
    if parameter_device(model).type == "meta" and not meta_weights_filled_at_train_start(args):
        raise UnsupportedModelError(meta_weights_refusal(model))


def placed_for_training(trainer) -> bool:
    """Whether the trainer's model is already where it trains, with real weights: Trainer.__init__
    moved it to args.device, or it stays where it is (model parallel, place_model_on_device=False).
    Under FSDP / DeepSpeed accelerate places the weights when train() starts. FSDP ranks agree (one
    1-element all_reduce), since the probe of a sharded model runs collectives on every rank. A model
    DeepSpeed ZeRO-3 partitioned at load (zero.Init, the same on every rank) waits for the engine."""
    where = parameter_device(trainer.freeze_runtime.target)
    if zero3_state(trainer.freeze_runtime.target) == "at load":
        return False  # ZeRO-3 placeholders (zero.Init): the prefix runs once the engine gathers them
    wrapped_later = bool(trainer.is_fsdp_enabled or trainer.is_deepspeed_enabled)
    ready = where.type != "meta" and (
        same_device(where, trainer.args.device) or not (trainer.place_model_on_device or wrapped_later))
    if trainer.is_fsdp_enabled:
        ready = bool(ranks_agree(float(ready), trainer.args.device, "min"))
    return ready


def defer_freeze(trainer, complete: Callable[[], None]) -> None:
    """Leave the kernels, prefix, probe and cache of `trainer` to the start of train(), where
    `complete()` runs them; until then the model runs as the plain freeze. With a cache the trainer
    routes its collator through a `DeferredCollator`, since Trainer builds the DataLoader before it
    wraps the model."""
    logger.info("fastfreeze: the model is not yet where it trains (weights on %s, training device %s): "
                "kernels, prefix and probe are set up when train() has placed it",
                parameter_device(trainer.freeze_runtime.target), trainer.args.device)
    trainer.add_callback(CompleteFreezeAtTrainBegin(complete))
