"""FastFreezeTrainer: a drop-in `transformers.Trainer` that trains only the suffix above a frozen, no-grad prefix.

The freeze logic lives in `FreezeMixin`, glue that touches only model set-up, the per-step forward,
saving and resuming; so the same mixin serves `Trainer` and TRL's `SFTTrainer`. It overrides
Trainer's public hooks; the two private ones it needs are reached through
`fastfreeze._hf_compat.TrainerHooks`. Each step is planned and run by `fastfreeze.step.PrefixStep`
(which a plain training loop uses too); set-up where the model trains: `fastfreeze.placement`.

Usage:
    trainer = FastFreezeTrainer(model=model, args=TrainingArguments(...), train_dataset=ds,
                                freeze_config=FreezeConfig(num_frozen_layers=6))
    trainer.train()
"""
from __future__ import annotations

import contextlib
import dataclasses
import inspect
import json
import logging
import os
import warnings

from transformers import Trainer

from . import _io
from ._hf_compat import TrainerHooks, last_checkpoint, remove_unused_columns
from .cache.wiring import FlushCache as _FlushCache
from .cache.wiring import PrefixCacheRuntime
from .config import FreezeConfig, FreezeConfigError
from .freeze import FreezeReport
from .prefix import FrozenPrefix
from .placement import DeferredCollator, defer_freeze, placed_for_training, refuse_meta_weights
from .runtime import FreezeRuntime, complete_freeze, prepare_freeze, undo_on_error
from .step import PLAN_KEY, PrefixStep

logger = logging.getLogger(__name__)

FREEZE_CONFIG_NAME = "fastfreeze_config.json"


_level_set_by_fastfreeze: int | None = None


def _follow_run_log_level(args) -> None:
    """Let the `fastfreeze` logger show what the run's log level shows (args.log_level, or transformers'
    verbosity, as Trainer applies to transformers' logger): e.g. `--log_level info` in an HF example
    script prints the freeze report next to Trainer's own INFO lines. A level the user set on the
    `fastfreeze` logger is kept, and the logger is never made quieter than it already is."""
    global _level_set_by_fastfreeze
    ff_logger = logging.getLogger("fastfreeze")
    if ff_logger.level not in (logging.NOTSET, _level_set_by_fastfreeze):
        return
    level = args.get_process_log_level()
    if level < ff_logger.getEffectiveLevel():
        ff_logger.setLevel(level)
        _level_set_by_fastfreeze = level


def drop_empty_param_groups(optimizer):
    """Remove parameter groups with no parameters (HF Trainer's no-decay group is empty when only
    LoRA weights or only matrices train); DeepSpeed ZeRO and some fused optimizers reject them.
    Call before the optimizer has state. Returns the optimizer.

    Usage:
        drop_empty_param_groups(trainer.create_optimizer())
    """
    if optimizer is None:
        return None
    groups = [g for g in optimizer.param_groups if len(g["params"]) > 0]
    if not groups:
        raise ValueError("The optimizer has no parameters to train: check what the freeze and the adapter leave trainable.")
    if len(groups) != len(optimizer.param_groups):
        if any(len(s) for s in optimizer.state.values()):
            raise RuntimeError("drop_empty_param_groups must run before the first optimizer step.")
        optimizer.param_groups[:] = groups
    return optimizer


def warn_memory_cache_per_process(config: FreezeConfig, world_size: int) -> bool:
    """Warn (and return True) when a memory cache serves a multi-process run: each rank keeps its own
    rows and the sampler deals each rank other rows every epoch, so only a rank's own rows are ever
    hits (under FSDP a warm step then needs every rank to hit). A disk cache on a directory every rank
    shares is reused by all of them from the next epoch on.

    Usage: warn_memory_cache_per_process(trainer.freeze_config, trainer.args.world_size)
    """
    if config.cache != "memory" or world_size <= 1:
        return False
    warnings.warn(
        f"fastfreeze: cache='memory' lives in each of the {world_size} processes; a row is reused only by the "
        "rank that computed it. For reuse across ranks use FreezeConfig(cache='disk', cache_dir=<a directory "
        "every rank shares>), or call trainer.build_prefix_cache() on every rank before train().", stacklevel=3)
    return True


# Trainer classes from these packages never read `outputs.logits` of a training forward given labels
# (TRL >= 1.16 reads its own fused head's fields; `FastFreezeSFTTrainer` checks that head is there).
_LOSS_READERS_KNOWN = ("transformers.", "trl.", "fastfreeze.")


def trainer_reads_logits(trainer_cls: type) -> str | None:
    """Why a trainer class may read `outputs.logits` in training (None: it does not): a `compute_loss`
    or `training_step` defined outside transformers / TRL / fastfreeze whose source names `logits`, or
    whose source cannot be read. Such a trainer gets the fused loss turned off (it returns logits=None).

    Usage:
        reason = trainer_reads_logits(type(trainer))
    """
    for klass in trainer_cls.__mro__:
        if klass.__module__.startswith(_LOSS_READERS_KNOWN):
            continue
        for name in ("compute_loss", "training_step"):
            fn = klass.__dict__.get(name)
            if fn is None:
                continue
            try:
                source = inspect.getsource(fn)
            except (OSError, TypeError):
                return f"{klass.__qualname__}.{name} may read outputs.logits (its source cannot be read to check)"
            if "logits" in source:
                return f"{klass.__qualname__}.{name} reads outputs.logits"
    return None


class FreezeMixin(TrainerHooks):
    """Adds `freeze_config=` to a Trainer class. See `FastFreezeTrainer`."""

    def __init__(self, *args, freeze_config: FreezeConfig | None = None, **kwargs):
        model = kwargs.get("model", args[0] if args else None)
        self.freeze_config = freeze_config
        self._ff_eval_depth = 0  # > 0 inside evaluate(): its metrics get no fastfreeze counters
        self.freeze_runtime: FreezeRuntime | None = None
        if freeze_config is not None:
            if not isinstance(freeze_config, FreezeConfig):
                raise FreezeConfigError(
                    f"freeze_config must be a fastfreeze.FreezeConfig, got {type(freeze_config).__name__}; "
                    "build one with FreezeConfig(num_frozen_layers=k)."
                )
            if model is None:
                raise FreezeConfigError("FastFreezeTrainer needs `model=`; `model_init` is not supported with a freeze.")
            refuse_meta_weights(model, kwargs.get("args", args[1] if len(args) > 1 else None))
            # Only the freeze itself here (the optimizer reads requires_grad); what depends on the
            # device and on real weights waits until the model is where it trains (_complete_freeze).
            self.freeze_runtime = prepare_freeze(model, freeze_config)
        with undo_on_error(self.freeze_runtime):  # a refusal (or any error) leaves the model as it came
            super().__init__(*args, **kwargs)
            self.prefix_step: PrefixStep | None = None  # plans and runs each step (fastfreeze.step)
            self._ff_collator: DeferredCollator | None = None
            if self.freeze_runtime is not None:
                if placed_for_training(self):
                    self._complete_freeze()
                else:
                    defer_freeze(self, self._complete_at_train_begin)
                    self._wire_collator()

    # ------------------------------------------------------------------ where the model trains
    def _complete_freeze(self) -> None:
        """Kernel set, kernels, prefix, probe and cache, on the model as it trains (once)."""
        runtime = self.freeze_runtime
        if runtime.completed:
            return
        self._fused_loss_for_this_trainer(runtime)
        with undo_on_error(runtime):  # the cache's opening may refuse too (ZeRO-3 partitioned prefix)
            complete_freeze(runtime, self.args.device)
            if self.prefix is None:
                return
            self.prefix_step = PrefixStep.open(self.model, runtime, self.args.device)
            if self.prefix_cache is not None:
                self._wire_collator()
                self.add_callback(_FlushCache(self.prefix_cache))
                warn_memory_cache_per_process(runtime.config, self.args.world_size)

    def _complete_at_train_begin(self) -> None:
        """What `placement.CompleteFreezeAtTrainBegin` calls when train() has placed the model."""
        if not self.freeze_runtime.completed:
            self._complete_freeze()
            self._log_freeze_report()

    def _wire_collator(self) -> None:
        """The one place the trainer's collator changes. Deferred with a cache (it opens at train start,
        after Trainer built its DataLoader): a hand-over point, which that DataLoader holds. Once the cache
        is open: the cache's collator, also inside the hand-over point if there is one."""
        if self.prefix_cache is None:
            if self.freeze_config.cache and self.freeze_config.is_prefix:
                self.data_collator = self._ff_collator = DeferredCollator(self.data_collator)
            return
        base = self._ff_collator.inner if self._ff_collator is not None else self.data_collator
        self.data_collator = self.prefix_cache.wrap_collator(base)
        if self._ff_collator is not None:
            self._ff_collator.inner = self.data_collator  # the DataLoader Trainer already built calls this

    def _reads_logits(self) -> str | None:
        """Why this trainer reads `outputs.logits` in training (None: it does not); see `trainer_reads_logits`."""
        return trainer_reads_logits(type(self))

    def _fused_loss_for_this_trainer(self, runtime: FreezeRuntime) -> None:
        # The fused loss returns logits=None in training; a trainer that reads them would crash or log a
        # wrong metric, so this run's config (not the caller's object) turns it off, and the report says why.
        reason = self._reads_logits() if runtime.config.fused_loss else None
        if reason:
            runtime.config = dataclasses.replace(runtime.config, fused_loss=False)
            runtime.report.notes.append(f"fused loss turned off: {reason} in training, which the fused loss does not "
                                        "build (with the Triton kernels the LM head then computes them as without "
                                        "fastfreeze)")

    # ------------------------------------------------------------------ accessors
    @property
    def prefix(self) -> FrozenPrefix | None:
        return self.freeze_runtime.prefix if self.freeze_runtime else None

    @property
    def prefix_cache(self) -> PrefixCacheRuntime | None:
        """The open boundary cache (None without one, or before the freeze completes)."""
        return self.prefix_step.cache if self.prefix_step is not None else None

    @property
    def freeze_report(self) -> FreezeReport | None:
        return self.freeze_runtime.report if self.freeze_runtime else None

    # ------------------------------------------------------------------ per-step forward
    def _step_scope(self, inputs):
        """The step's prefix scope (`PrefixStep.run`), its plan taken from the batch; none without a prefix."""
        step = self.prefix_step
        return step.run(step.plan(inputs), inputs) if step is not None else contextlib.nullcontext()

    # ------------------------------------------------------------------ cache
    def build_prefix_cache(self, dataset=None, batch_size: int | None = None) -> dict:
        """Precompute the boundary hidden state of every example of `dataset` (default: the train and
        eval datasets) in a no-grad pass, bucketed by length. Returns build statistics.

        Usage:
            trainer.build_prefix_cache(); trainer.train()
        """
        if self.freeze_runtime is not None and not self.freeze_runtime.completed:
            raise FreezeConfigError(
                "The model is not yet where it trains (weights on meta, or placed by FSDP/DeepSpeed when train() "
                "starts), so its prefix cannot run before train(). The cache fills during the first epoch instead; "
                "or build a disk cache in a one-process run first (FreezeConfig(cache='disk', cache_dir=...)): "
                "this run reuses it.")
        if self.prefix_cache is None:
            raise FreezeConfigError("No prefix cache: pass FreezeConfig(cache='memory' or 'disk') to the trainer.")
        targets = [dataset] if dataset is not None else [self.train_dataset]
        if dataset is None and self.eval_dataset is not None:
            evals = self.eval_dataset.values() if isinstance(self.eval_dataset, dict) else [self.eval_dataset]
            targets += list(evals)
        if batch_size is None:
            # Larger batches pay on an accelerator; on CPU they measured slower than the training batch
            # (cpu-small: 3100-3500 tok/s at 4x vs 3900-4400 at 1x).
            per_device = max(self.args.per_device_eval_batch_size, self.args.per_device_train_batch_size)
            batch_size = per_device * (4 if self.args.device.type != "cpu" else 1)
        totals = {"examples": 0, "tokens": 0, "seconds": 0.0}
        for ds in targets:
            stats = self.prefix_cache.build(self._model_columns(ds), self.data_collator, batch_size, self.args.device)
            for key in totals:
                totals[key] += stats[key]
        totals["tokens_per_s"] = totals["tokens"] / totals["seconds"] if totals["seconds"] else float("nan")
        self._maybe_offload_prefix()
        return totals

    def _maybe_offload_prefix(self) -> None:
        # Only worth it on an accelerator; on CPU the weights already live in host memory.
        if not (self.freeze_config.offload_prefix and self.args.device.type != "cpu" and self.train_dataset is not None):
            return
        if self.prefix_cache.all_cached(self._model_columns(self.train_dataset), self.data_collator):
            self.prefix.offload("cpu")

    def _model_columns(self, dataset):
        """`dataset` as Trainer's DataLoader collates it (columns the model does not take removed), so the
        cache keys what training looks up."""
        return remove_unused_columns(self, dataset, "prefix cache") if hasattr(dataset, "column_names") else dataset

    def cache_summary(self):
        """Entries, bytes, hits and misses of the prefix cache (None without a cache)."""
        return self.prefix_cache.cache.summary() if self.prefix_cache else None

    def fastfreeze_metrics(self) -> dict:
        """The `fastfreeze/*` counters that go into training logs (not into evaluation metrics): the
        frozen / trainable parameter counts, then the step's (`PrefixStep.metrics`), a fixed key set.

        Usage: trainer.fastfreeze_metrics()["fastfreeze/cache_hits"]
        """
        if self.freeze_runtime is None:
            return {}
        report = self.freeze_runtime.report
        out = {"fastfreeze/frozen_params": report.frozen_params,
               "fastfreeze/trainable_params": report.trainable_params}
        if self.prefix_step is not None:
            out.update(self.prefix_step.metrics())
        return out

    def log(self, logs: dict, *args, **kwargs):
        # Training rows only: evaluation metrics (evaluate()'s result, eval rows of log_history,
        # eval_results.json, the model card's results table) keep exactly the keys the evaluation
        # produced; counters there would also make the model card's table rows disagree on columns.
        if self.freeze_runtime is not None and not self._ff_eval_depth:
            for key, value in self.fastfreeze_metrics().items():
                logs.setdefault(key, value)
        return super().log(logs, *args, **kwargs)

    def evaluate(self, *args, **kwargs):
        self._ff_eval_depth += 1
        try:
            return super().evaluate(*args, **kwargs)
        finally:
            self._ff_eval_depth -= 1

    def prepare_batch(self, inputs, prepare):
        """Trainer's device copy of a batch (`prepare`), with the cached boundary kept out of it: it is
        the largest tensor of the batch, pinned by the collator / DataLoader, and must keep its dtype
        (DeepSpeed casts float inputs), so the step's scope moves it, asynchronously. The step's plan
        is made here, once, and travels to the scope with the batch."""
        if self.prefix_step is None:
            return prepare(inputs)
        plan = self.prefix_step.plan(inputs)
        inputs = prepare(inputs)
        if plan.cached_rows:
            inputs[PLAN_KEY] = plan
        return inputs

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        with self._step_scope(inputs):
            return super().compute_loss(model, inputs, return_outputs=return_outputs,
                                        num_items_in_batch=num_items_in_batch)

    def prediction_step(self, model, inputs, prediction_loss_only, ignore_keys=None):
        # Trainer's prediction_step may call compute_loss, which enters the step's scope again: a nested
        # scope, which just runs (the outer one injects, or captures and stores).
        with self._step_scope(inputs):
            return super().prediction_step(model, inputs, prediction_loss_only, ignore_keys=ignore_keys)

    def create_optimizer(self, *args, **kwargs):
        # HF keeps empty decay/no-decay groups (e.g. when only LoRA matrices train); DeepSpeed rejects them.
        return drop_empty_param_groups(super().create_optimizer(*args, **kwargs))

    # ------------------------------------------------------------------ save / resume
    def save_freeze_config(self, output_dir: str) -> None:
        """Write the freeze config next to a model Trainer just saved (checkpoints, save_model), so a
        resume can check it; a hook of `_hf_compat.TrainerHooks`."""
        if self.freeze_config is not None and self.args.should_save:
            _io.write_text(os.path.join(output_dir, FREEZE_CONFIG_NAME), self.freeze_config.to_json())

    def train(self, resume_from_checkpoint=None, *args, **kwargs):
        if resume_from_checkpoint:
            self._check_resume(resume_from_checkpoint)
        self._log_freeze_report()
        if self.prefix_step is not None:
            self.prefix_step.new_run()  # train() (re)wraps the model: its first forward calls every module
        return super().train(resume_from_checkpoint, *args, **kwargs)

    def _log_freeze_report(self) -> None:
        """Log what is frozen and trainable, once per train() call, on the main process (INFO on the
        `fastfreeze` logger, which follows the run's log level like transformers' logger)."""
        if self.freeze_runtime is None or not self.is_world_process_zero():
            return
        _follow_run_log_level(self.args)
        logger.info("fastfreeze: freeze in effect for this training run\n%s", self.freeze_report)

    def _check_resume(self, resume_from_checkpoint) -> None:
        path = resume_from_checkpoint
        if isinstance(path, bool):
            path = last_checkpoint(self.args.output_dir)
            if path is None:
                return  # Trainer raises its own clear error for this
        saved_file = os.path.join(path, FREEZE_CONFIG_NAME)
        saved = None
        if os.path.exists(saved_file):
            with open(saved_file) as f:
                saved = FreezeConfig.from_dict(json.load(f))
        ours = self.freeze_config.identity() if self.freeze_config else None
        theirs = saved.identity() if saved else None
        if ours != theirs:
            raise FreezeConfigError(
                f"Cannot resume from {path}: it was trained with freeze config {theirs}, this trainer has {ours}. "
                f"Resume with the same FreezeConfig (see {FREEZE_CONFIG_NAME} in the checkpoint), or start a new "
                "run from the checkpoint's weights with `from_pretrained` instead of resume_from_checkpoint."
            )


class FastFreezeTrainer(FreezeMixin, Trainer):
    """`transformers.Trainer` with the embedding + bottom k blocks frozen and run as a no-grad prefix.

    Accepts everything Trainer accepts, plus `freeze_config`. With `freeze_config=None` it is a
    plain Trainer.

    Usage:
        FastFreezeTrainer(model=model, args=args, train_dataset=ds,
                          freeze_config=FreezeConfig(num_frozen_layers=6)).train()
    """
