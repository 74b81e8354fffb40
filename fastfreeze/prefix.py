"""The frozen prefix at run time: no autograd, eval mode, and a boundary that a cache can feed.

The prefix is the embedding side plus blocks[:k]; the *boundary* is the hidden state it hands to
block k (or to the final norm when every block is frozen). We keep the model's own forward and
change only, per instance, the forwards of the prefix modules, which stay in eval mode even when
Trainer calls `model.train()` (dropout never fires there). Each runs in the mode that one of
`FrozenPrefix`'s methods opens for a `with` block; only these methods set the prefix's run state:

- computed (the default; `capture` records the boundary): under `torch.no_grad()`, no graph is built;
- `inject(boundary)`: the last prefix module (the *boundary source*) returns the injected boundary
  and the others stand in with placeholders (`fastfreeze.standin`): the cache's fast path. On a
  whole-batch hit each is swapped, in its parent, for a parameter-free stand-in, so nothing of the
  prefix runs, hooks included (FSDP's all-gathers); `only=` stands in for some modules only;
- `reference()`: the model's own forward, autograd as the caller has it (`fastfreeze.probe`'s baseline).

Substituting at the boundary source's output, not at block k's input, matters: block k may be
activation-checkpointed, and a checkpoint replays block k with its original inputs, so a
substitution there would be undone in the backward replay.

Usage:
    prefix = FrozenPrefix(model, parts, num_frozen_layers=6).install()
    with prefix.capture() as cap: model(**batch)      # cap.boundary: [B, T, H], no grad
    with prefix.inject(cap.boundary): model(**batch)   # prefix skipped, same loss
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch

try:  # a torch built without distributed has no DTensor (and nothing sharded)
    from torch.distributed.tensor import DTensor
except ImportError:  # pragma: no cover
    DTensor = None
from torch import nn

from . import _patch
from ._timing import RunTimes
from ._hf_compat import input_require_grads_enabled, zero3_partitioned
from .families import ModelParts, UnsupportedModelError
from .standin import StandIns, as_output, first_arg, hidden, items, output_spec, placeholder_output
from .trace import eval_mode, probe_inputs, run_model, run_until

OWNER = "prefix"  # the owner of this module's per-instance patches (fastfreeze._patch)


@dataclass
class _Capture:
    boundary: torch.Tensor | None = None
    stop: bool = False  # raise BoundaryReached once captured: the precompute pass needs no suffix


class BoundaryReached(Exception):
    """Raised inside the model's forward by `capture(stop=True)` once the boundary is known."""


class _State(RunTimes):
    """Shared, per-model mutable state of the prefix (deep-copied along with the model). Set only by
    `FrozenPrefix`'s methods and the prefix forwards; tests read its counters. Its run times (of the
    computed prefix, for the "prefix time saved" estimate) are `RunTimes`'."""

    def __init__(self) -> None:
        super().__init__()
        # The run mode (see the module docstring): `reference()` sets bypass; `inject()` sets injected,
        # only (None: every module stands in) and fill (the placeholders' value); `capture()` capture.
        self.bypass = False
        self.injected: torch.Tensor | None = None
        self.only: set | None = None
        self.fill = 0.0
        self.capture: _Capture | None = None
        self.boundary_requires_grad = False  # set under reentrant checkpointing of the suffix
        self.prefix_calls = 0  # how many times the prefix really ran (tests and logs)
        self.prefix_tokens = 0  # how many (padded) tokens it ran on: a partial cache hit runs only the missing ones
        self.standin_calls = 0  # how many prefix modules were swapped out for a stand-in (tests)
        self.offloaded = False


def _always_eval(self: nn.Module, mode: bool = True) -> nn.Module:
    # Trainer calls model.train() every step; the frozen prefix must stay deterministic.
    return nn.Module.train(self, False)


def _call_original(module: nn.Module, args, kwargs):
    previous = _patch.replaced(module, "forward", OWNER)  # e.g. an accelerate hook or a kernel swap
    if previous is not None:
        return previous(*args, **kwargs)
    return type(module).forward(module, *args, **kwargs)


@torch.compiler.disable
def _prefix_forward(self: nn.Module, *args, **kwargs):
    # Kept out of torch.compile on purpose: the prefix runs eagerly under no_grad (per-instance flags
    # would make Dynamo recompile once per module), and only the trainable suffix is compiled.
    state: _State = self._ff_state
    if state.bypass:  # `FrozenPrefix.reference`: the model's own forward, autograd as the caller has it
        return _call_original(self, args, kwargs)
    if state.injected is not None:
        return _injected_forward(self, state, args, kwargs)
    return _computed_forward(self, state, args, kwargs)


def _injected_forward(module: nn.Module, state: _State, args, kwargs):
    """Under `FrozenPrefix.inject`: the boundary source returns the injected boundary, a module that
    stands in a placeholder; one that cannot (or, under `only`, need not) runs on what it is given."""
    spec = module.__dict__.get("_ff_spec")
    if module._ff_is_boundary_source:
        return as_output(state.injected, spec)
    if state.only is None or module in state.only:
        out = placeholder_output(spec, first_arg(args, kwargs), state.fill)
        if out is not None:
            return out
    with torch.no_grad():
        return _call_original(module, args, kwargs)  # on placeholder inputs, maybe: nothing to record


def _computed_forward(module: nn.Module, state: _State, args, kwargs):
    """The no-grad prefix: each module records its output form once (`fastfreeze.standin`); the
    boundary source's run is counted, timed and captured."""
    first = first_arg(args, kwargs)
    if module._ff_is_first:
        state.start(first)
    with torch.no_grad():
        out = _call_original(module, args, kwargs)
    if not _patch.overridden(module, "_ff_spec"):
        _patch.patch(module, "_ff_spec", output_spec(first, out), OWNER)
    if not module._ff_is_boundary_source:
        return out
    boundary = hidden(out)
    state.prefix_calls += 1
    state.prefix_tokens += boundary.shape[:-1].numel()
    state.stop(boundary, boundary.shape[:-1].numel())
    if state.capture is not None:
        state.capture.boundary = boundary
        if state.capture.stop:
            raise BoundaryReached
    if state.boundary_requires_grad and torch.is_grad_enabled():
        # Reentrant checkpointing drops parameter grads of a segment whose inputs need no grad.
        boundary = boundary.detach().requires_grad_(True)
        out = type(out)([boundary, *out[1:]]) if items(out) else boundary
    return out


def _same_view(a, b) -> bool:
    """`b` is `a` re-wrapped (a detached alias: same storage, offset, shape and strides), as DeepSpeed
    ZeRO-3's module hooks hand a block's output to the next; nothing transformed the values."""
    return (isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor) and a.data_ptr() == b.data_ptr()
            and a.shape == b.shape and a.stride() == b.stride() and a.dtype == b.dtype)


def _no_input_require_grads(self, *args, **kwargs):
    # HF makes the embedding output require grad under checkpointing so gradients reach frozen
    # inputs; with a no-grad prefix that would only make backward walk into the prefix.
    return None


class FrozenPrefix:
    """Installs and drives the no-grad prefix on one model instance (see module docstring)."""

    def __init__(self, model: nn.Module, parts: ModelParts, num_frozen_layers: int):
        self.model, self.parts, self.k = model, parts, num_frozen_layers
        modules = [m for _, m in parts.embedding_side] + [parts.layers[i] for i in range(num_frozen_layers)]
        self.modules: list[nn.Module] = modules
        self.names = [p for p, _ in parts.embedding_side] + [parts.layer_path(i) for i in range(num_frozen_layers)]
        self.boundary_source = modules[-1]
        if num_frozen_layers < parts.num_layers:
            self.boundary_sink, self.boundary_sink_name = parts.layers[num_frozen_layers], parts.layer_path(num_frozen_layers)
        else:
            self.boundary_sink, self.boundary_sink_name = parts.final_norm, parts.final_norm_path
        if self.boundary_sink is None:
            raise UnsupportedModelError(
                "All decoder layers are frozen but no final norm was found to receive the boundary; "
                "freeze fewer layers."
            )
        self.state = _State()
        self.installed = False
        self._standins = StandIns(model, self.names, modules, self.state)

    # ---------------------------------------------------------------- install / remove
    def install(self) -> "FrozenPrefix":
        if self.installed:
            return self
        for m in self.modules:
            if _patch.patched(m, "_ff_state", OWNER):
                raise RuntimeError("This model already has a fastfreeze prefix installed; call .remove() first.")
        self._check_boundary_flow()
        for m in self.modules:
            # A forward already overridden on the instance (accelerate hooks) is what _call_original runs.
            _patch.patch(m, "_ff_state", self.state, OWNER)
            _patch.patch(m, "_ff_is_boundary_source", m is self.boundary_source, OWNER)
            _patch.patch(m, "_ff_is_first", m is self.modules[0], OWNER)
            _patch.bind(m, "forward", _prefix_forward, OWNER)
            _patch.bind(m, "train", _always_eval, OWNER)
            for sub in m.modules():  # eval(), through the record: remove() puts every mode back as it was
                _patch.patch(sub, "training", False, OWNER)
        # HF's input-require-grads hooks (gradient checkpointing, PEFT) would make backward walk into the
        # no-grad prefix: off while installed; whether they were on is recorded for remove().
        had_hooks = _patch.patch(self.model, "_ff_input_require_grads", input_require_grads_enabled(self.model), OWNER)
        _patch.bind(self.model, "enable_input_require_grads", _no_input_require_grads, OWNER)
        if had_hooks:
            self.model.disable_input_require_grads()
        self.installed = True
        return self

    def remove(self) -> None:
        """Undo `install` (and any stand-in still in place): the model's own forwards and train(), every
        module's mode and HF's input-require-grads hooks as they were. `requires_grad` is the freeze's,
        undone by `FreezeRuntime.teardown`."""
        self._standins.restore_left_in_place()
        had_hooks = _patch.ours(self.model, "_ff_input_require_grads", OWNER)
        subs = {id(sub): sub for m in self.modules for sub in m.modules()}
        for sub in subs.values():
            if _patch.patched(sub, "training", OWNER):
                sub.training = False  # as installed (a direct sub.train() since must not block the undo)
        for m in [*subs.values(), self.model]:
            _patch.unpatch_all(m, OWNER)
        if had_hooks:
            self.model.enable_input_require_grads()  # the model's own again (ours is unpatched)
        self.installed = False

    def _check_boundary_flow(self) -> None:
        """Probe forward: the boundary source's output must be exactly the boundary sink's input.
        If the model transforms the hidden state in between (in its own forward), a cached
        boundary would be wrong, so refuse with the reason."""
        def forward_watching_sink():  # the whole forward (stop=False): each hook keeps its module's last call
            return run_until(lambda: run_model(self.model, probe_inputs(self.model)), self.boundary_sink, stop=False)

        with eval_mode(self.model), torch.no_grad():
            source = run_until(forward_watching_sink, self.boundary_source, output=True, stop=False)
        out, sink = hidden(source.output), source.result.hidden
        if out is None or not (out is sink or _same_view(out, sink)):
            raise UnsupportedModelError(
                f"{type(self.model).__name__}: the output of {self.names[-1]} is not passed unchanged to "
                f"{self.boundary_sink_name}; the model's forward transforms it in between, so the frozen prefix "
                "cannot be split there. Freeze with `freeze_bottom_layers` only (no fast path), or add a "
                "FamilySpec for this family in fastfreeze/families.py."
            )

    # ---------------------------------------------------------------- run-time modes
    @contextlib.contextmanager
    def _mode(self, **values):
        """Set run-state fields for the block (the modes below), then put back what was there."""
        old = {k: getattr(self.state, k) for k in values}
        for k, v in values.items():
            setattr(self.state, k, v)
        try:
            yield
        finally:
            for k, v in old.items():
                setattr(self.state, k, v)

    def reference(self):
        """Within this block every prefix module runs the model's own forward, autograd as the caller
        has it (nothing captured, counted or timed): the plain freeze the probe compares against.

        Usage: with prefix.reference(): logits = model(**batch).logits"""
        return self._mode(bypass=True)

    @contextlib.contextmanager
    def inject(self, boundary: torch.Tensor | None, swap: bool = True, *, only=None, fill: float = 0.0):
        """Within this block the model's forward uses `boundary` ([B, T, H]) as the prefix output.

        With `swap=True` every prefix module whose output form is known (it ran once) is swapped, in
        its parent, for a parameter-free stand-in, so it is not called at all: no FSDP all-gather of
        its shard, no hooks, and stand-in outputs are stride-0 views (no [B, T, H] allocation).
        `swap=False` calls the modules, which return placeholders: what a rank must do under FSDP
        when another rank runs the prefix in the same step (its all-gathers must be matched).
        Partial injection (the probe's): only the prefix modules in `only` stand in (the others run on
        what they are given); placeholders hold `fill` (the probe's NaN shows a suffix reading them).

        Usage: with prefix.inject(cached_boundary): loss = model(**batch).loss"""
        if boundary is None:
            yield
            return
        swapped: list = []
        with self._mode(injected=boundary, only=only, fill=fill):
            try:  # the swap inside: one that fails halfway is undone as far as it got
                if swap:
                    self._standins.swap_in(swapped, only)
                yield
            finally:
                for parent, name, original in reversed(swapped):
                    setattr(parent, name, original)

    @contextlib.contextmanager
    def capture(self, stop: bool = False):
        """Within this block, the boundary computed by the prefix is recorded in the yielded object.
        With `stop=True` the forward ends right after the prefix (the rest of the model never runs).

        Usage: with prefix.capture() as cap: model(**batch)   # cap.boundary: [B, T, H], no grad"""
        cap = _Capture(stop=stop)
        with self._mode(capture=cap):
            try:
                yield cap
            except BoundaryReached:
                if not stop:
                    raise

    def compute_boundary(self, **model_inputs) -> torch.Tensor:
        """Run only the prefix on a batch and return its boundary hidden state [B, T, H] (no grad)."""
        with self.capture(stop=True) as cap, torch.no_grad():
            self.model(**model_inputs, use_cache=False)
        return cap.boundary

    # ---------------------------------------------------------------- placement
    def offload(self, device: str | torch.device = "cpu") -> None:
        """Move the prefix weights to `device` (e.g. off the accelerator once everything is cached)."""
        if not self.state.offloaded:
            self.offloaded_from = next(self.parameters()).device
        for m in self.modules:
            m.to(device)
        self.state.offloaded = True

    def restore(self) -> None:
        """Bring offloaded prefix weights back next to the suffix."""
        if self.state.offloaded:
            for m in self.modules:
                m.to(self.offloaded_from)
            self.state.offloaded = False

    @property
    def offloaded(self) -> bool:
        return self.state.offloaded

    def set_reentrant_checkpointing(self, on: bool) -> None:
        self.state.boundary_requires_grad = on

    @property
    def prefix_calls(self) -> int:
        return self.state.prefix_calls

    @property
    def prefix_tokens(self) -> int:
        """Tokens the prefix really ran on (padding included), over every run so far."""
        return self.state.prefix_tokens

    @contextlib.contextmanager
    def uncounted(self):
        """Runs inside this block (install-time checks) leave the call/token counters and timings as they were."""
        st = self.state
        calls, tokens, t0, mark = st.prefix_calls, st.prefix_tokens, st.t0, self.timing_mark()
        try:
            yield
        finally:
            st.prefix_calls, st.prefix_tokens, st.t0 = calls, tokens, t0
            self.discard_timings(mark)

    def timing_mark(self) -> int:
        """A position in the prefix run-time record (see `discard_timings`)."""
        return self.state.mark()

    def discard_timings(self, mark: int) -> None:
        """Forget the prefix runs timed since `mark` (e.g. a forward that included compilation)."""
        self.state.discard(mark)

    def settle_timings(self) -> None:
        """Fold the prefix runs timed so far into the running totals (waiting for their CUDA events) and
        empty the record, so it stays small: call at log time, never between a `timing_mark` and its
        `discard_timings` (settled runs can no longer be discarded)."""
        self.state.settle()

    def seconds_per_token(self) -> float | None:
        """Measured wall time of the prefix per (padded) token, over every timed run so far; None
        before any. Only reads (settled or not, every timed run counts; see `settle_timings`)."""
        return self.state.seconds_per_token()

    def sharded(self) -> bool:
        """True when the prefix weights are DTensor shards (FSDP2) or DeepSpeed ZeRO-3 partitions:
        calling a prefix module then all-gathers, a collective every rank must issue alike."""
        return any((DTensor is not None and isinstance(p, DTensor)) or zero3_partitioned(p) for p in self.parameters())

    def parameters(self):
        seen: set[int] = set()
        for m in self.modules:
            for p in m.parameters():
                if id(p) not in seen:
                    seen.add(id(p))
                    yield p

    def named_tensors(self):
        """(name, tensor) for every frozen parameter and buffer of the prefix: what its output depends on.
        A DeepSpeed ZeRO-3 parameter comes as itself (detached it would be its empty placeholder only)."""
        for name, m in zip(self.names, self.modules):
            for n, t in m.state_dict(keep_vars=True).items():
                yield f"{name}.{n}", t if zero3_partitioned(t) else t.detach()
