"""One training step with the frozen prefix: plan the batch (cache hit, partial hit or miss) once, then run it in one scope.

A batch from the cache's collator may carry cached boundary rows (`BOUNDARY_KEY`) and, when only some
of its segments were cached, which ones are missing (`MISSING_KEY`). `PrefixStep.plan` takes both
out of the batch once and decides what the prefix must do:

- hit: the whole boundary is cached; it is injected and, once the run has made one forward (and,
  under FSDP / ZeRO-3, every rank hit too), no prefix module is called at all;
- partial: the prefix runs on the missing segments only, their rows are stored and written into the
  boundary, then the step goes on as a hit;
- miss: the prefix runs on the whole batch and its rows are stored; a partial hit that cannot be
  filled here is planned as a miss, with the reason (`StepPlan.reason`).

`PrefixStep.run` is the one scope a step runs in; it owns the step's counters (cache-hit tokens,
forwards) and its depth: scopes nest (Trainer's prediction_step calls compute_loss) and only the
outermost acts, so nothing is injected, timed or stored twice. It needs no `transformers.Trainer`:
`FreezeMixin` is glue over it, and a plain PyTorch loop uses it the same way (examples/custom_loop.py).

Usage:
    runtime = apply_freeze(model, FreezeConfig(num_frozen_layers=6, cache="memory"))
    step = PrefixStep.open(model, runtime)
    loader = DataLoader(rows, batch_size=8, collate_fn=step.collator(collate))
    for batch in loader:
        plan = step.plan(batch)                       # before the batch moves to the device
        with step.run(plan, batch):
            loss = model(**batch).loss
        loss.backward(); optimizer.step(); optimizer.zero_grad()
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch

from ._dist import ranks_agree, several_ranks
from ._hf_compat import compile_events, uses_reentrant_checkpointing, zero3_partitioned
from .cache.collator import BOUNDARY_KEY, MISSING_KEY
from .cache.wiring import PrefixCacheRuntime
from .cache.segments import MissingSegments, missing_inputs
from .prefix import FrozenPrefix
from .runtime import FreezeRuntime

# Where a plan made before Trainer's device copy of the batch (FreezeMixin.prepare_batch) travels to
# the step's scope (compute_loss): the cached rows stay out of the device copy, and are taken once.
PLAN_KEY = "fastfreeze_step_plan"

HIT, PARTIAL, MISS = "hit", "partial", "miss"
NOT_CACHED = "not cached"


@dataclass(frozen=True)
class StepPlan:
    """What one batch needs from the prefix, decided when its cache rows are taken out of it.

    kind: "hit", "partial" or "miss"; boundary: the collated rows [B, T, H] as the collator made them
    (a partial hit: zeros where segments are missing); missing: a partial hit's missing segments;
    reason: why a miss runs the prefix on the whole batch; cached_rows: the collator sent cached rows."""

    kind: str
    boundary: torch.Tensor | None = None
    missing: MissingSegments | None = None
    reason: str = ""
    cached_rows: bool = False

    @property
    def hit_tokens(self) -> int:
        """Tokens served from the cache when this plan runs as planned."""
        if self.kind == MISS:
            return 0
        tokens = self.boundary.shape[:-1].numel()
        return tokens - self.missing.tokens if self.kind == PARTIAL else tokens


def zero3_gathers_per_call(prefix: FrozenPrefix) -> bool:
    """Whether calling the prefix makes DeepSpeed ZeRO-3 all-gathers that every rank must issue alike
    (ZeRO-3 weights and more than one rank)."""
    return any(zero3_partitioned(p) for p in prefix.parameters()) and several_ranks()


class PrefixStep:
    """Plans and runs training / evaluation steps through one model's frozen prefix and its cache
    (see the module docstring). `cache` is None without `FreezeConfig(cache=...)`: every step then
    runs the prefix, with no autograd. `device`: where the model trains (cached rows are moved there).

    Usage:
        step = PrefixStep.open(model, runtime)
        with step.run(step.plan(batch), batch): loss = model(**batch).loss
    """

    def __init__(self, prefix: FrozenPrefix, cache: PrefixCacheRuntime | None, device: torch.device | str):
        self.prefix, self.cache, self.device = prefix, cache, torch.device(device)
        self.hit_tokens = 0  # tokens served from the cache (the time-saved estimate multiplies them)
        self.forwards = 0  # outermost scopes run since the run began (see `new_run`)
        self._depth = 0  # > 0 inside a scope

    @classmethod
    def open(cls, model: torch.nn.Module, runtime: FreezeRuntime, device: torch.device | str | None = None) -> "PrefixStep":
        """The step of a completed `runtime` (`apply_freeze`) with a prefix, its configured cache opened
        (None when the config has none, or the store cannot be written: a warning says so). `model`: the
        model as trained (a PEFT wrapper included: the cache fingerprint reads it). `device`: default
        where the weights are."""
        if runtime.prefix is None:
            raise ValueError("No frozen prefix on this runtime: it is not completed (apply_freeze / complete_freeze), "
                             "or its frozen blocks are not a prefix (FreezeConfig(freeze_embeddings=False)).")
        cache = None
        if runtime.config.cache:
            cache = PrefixCacheRuntime.open(model, runtime.prefix, runtime.config, kernel_set=runtime.kernel_set)
        return cls(runtime.prefix, cache, device if device is not None else runtime.weights_device)

    def collator(self, collate_fn):
        """`collate_fn` wrapped to look each example up in the cache (itself without a cache)."""
        return self.cache.wrap_collator(collate_fn) if self.cache is not None else collate_fn

    def new_run(self) -> None:
        """A training run begins (Trainer.train() wraps the model anew): its first forward calls every
        prefix module (FSDP2 collects its units' states then) and re-reads the checkpointing mode."""
        self.forwards = 0

    def metrics(self) -> dict:
        """The `fastfreeze/*` counters of the prefix and its cache (call between steps), a fixed key set for a run:
        `prefix_seconds_saved_est` (cache-hit tokens x the prefix's measured seconds per token) is 0.0 until
        a hit was served and the prefix timed. FastFreezeTrainer logs them with each training row.

        Usage: step.metrics()["fastfreeze/cache_hits"]
        """
        out = {"fastfreeze/prefix_calls": self.prefix.prefix_calls}
        self.prefix.settle_timings()  # log time, outside any step: keeps the run-time record small
        if self.cache is not None:
            per_token = self.prefix.seconds_per_token()
            out["fastfreeze/prefix_seconds_saved_est"] = round(self.hit_tokens * per_token if per_token is not None else 0.0, 4)
            summary = self.cache.cache.summary()
            out.update({"fastfreeze/cache_hits": summary.hits, "fastfreeze/cache_misses": summary.misses,
                        "fastfreeze/cache_entries": summary.entries})
        return out

    # ------------------------------------------------------------------ plan
    def plan(self, batch) -> StepPlan:
        """Take the cache rows out of `batch` (a dict; others carry none) and decide the step: a plan
        an earlier hook made (under `PLAN_KEY`) is taken instead. Call once per batch, before the scope."""
        if not isinstance(batch, dict):
            return StepPlan(MISS, reason=NOT_CACHED)
        carried = batch.pop(PLAN_KEY, None)
        if carried is not None:
            return carried
        boundary, missing = batch.pop(BOUNDARY_KEY, None), batch.pop(MISSING_KEY, None)
        if boundary is None:
            return StepPlan(MISS, reason=NOT_CACHED)
        if missing is None:
            return StepPlan(HIT, boundary, cached_rows=True)
        refusal = self._partial_refusal(batch, missing)
        if refusal is not None:
            return StepPlan(MISS, reason=refusal, cached_rows=True)
        return StepPlan(PARTIAL, boundary, missing, cached_rows=True)

    def _partial_refusal(self, batch: dict, missing: MissingSegments) -> str | None:
        """Why a partly cached batch cannot be filled here (None: it can), so it runs as a whole miss."""
        if self.cache is None:
            return "partly cached, but no cache is open here to store the missing rows"
        if self.prefix.sharded() and several_ranks():
            # Computing only the missing segments is one more prefix run on this rank, whose all-gathers
            # the other ranks (FSDP2, ZeRO-3) would not pair: a deadlock.
            return "partly cached, but the prefix is sharded over several ranks: a run on the missing segments only would not pair"
        if missing_inputs(batch, missing) is None:
            return "partly cached, but the missing documents cannot share one packed row"
        return None

    # ------------------------------------------------------------------ run
    @contextlib.contextmanager
    def run(self, plan: StepPlan, inputs: dict):
        """The scope of one step's forward (and the loss computed from it): the cached boundary injected
        (moved to `device` here, once), or the prefix run and its rows stored into the cache after the
        block. `inputs`: the batch on the device, as the model gets it. Nested scopes just run."""
        if self._depth:
            yield
            return
        self._depth += 1
        try:
            boundary = self._boundary(plan, inputs)
            if self.forwards == 0:
                # The run's first forward: every set-up of the run is done by now (Trainer.train() turns
                # gradient checkpointing on before its first step), so this is where the mode can change.
                self.prefix.set_reentrant_checkpointing(uses_reentrant_checkpointing(self.prefix.boundary_sink))
            mark, compiles = self.prefix.timing_mark(), compile_events()
            skip = self._ranks_agree_to_skip_prefix(boundary is not None)
            if boundary is not None and not skip and zero3_gathers_per_call(self.prefix):
                # DeepSpeed ZeRO-3 gathers per leaf module (each Linear, norm, embedding), so a prefix block
                # that returns a placeholder skips the gathers its submodules would make on a rank that
                # computes: only the real prefix run pairs them. Same rows as the cached ones, not stored again.
                boundary = None
            elif boundary is not None:
                self.hit_tokens += plan.hit_tokens
            with self.prefix.inject(boundary, swap=skip), self.prefix.capture() as cap:
                yield
            self.forwards += 1
            if compile_events() != compiles:
                # torch.compile compiled (part of) the model during this forward: its prefix run time
                # includes compilation, so it does not enter the time-saved estimate.
                self.prefix.discard_timings(mark)
            if plan.kind == MISS and cap.boundary is not None and self.cache is not None:
                self.cache.store_batch(inputs, cap.boundary)
        finally:
            self._depth -= 1

    def _boundary(self, plan: StepPlan, inputs: dict) -> torch.Tensor | None:
        """The boundary this step injects, on the device (None: the prefix runs on the whole batch)."""
        if plan.kind != HIT and self.prefix.offloaded:
            self.prefix.restore()  # the prefix runs (the whole batch or its missing segments): weights back
        if plan.kind == MISS:
            return None
        if plan.kind == HIT:
            return plan.boundary.to(self.device, non_blocking=True)
        boundary = self.cache.fill_missing(inputs, plan.boundary.to(self.device), plan.missing)
        if boundary is None:  # the plan checked the same inputs: a batch changed between plan and run
            raise RuntimeError("fastfreeze: a partial cache hit planned as fillable could not be filled; "
                               "the batch changed between PrefixStep.plan and PrefixStep.run.")
        return boundary

    def _ranks_agree_to_skip_prefix(self, hit: bool) -> bool:
        """Whether this step's prefix modules may go uncalled (swapped for stand-ins, see
        `FrozenPrefix.inject`): the whole batch is cached, the run has made one forward (FSDP2 collects
        its units' states on the root's first forward, so none may be missing then), and with a sharded
        prefix every rank's batch is cached too, agreed with one 1-element all_reduce per step, which
        every rank issues whether it hit or not: a rank that skipped its all-gathers while another ran
        the prefix would deadlock."""
        if self.cache is None:
            return False
        if self.prefix.sharded():
            hit = bool(ranks_agree(float(hit), self.device, "min"))
        return hit and self.forwards > 0
