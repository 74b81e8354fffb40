"""The frozen prefix at run time: no autograd, eval mode, and a boundary that a cache can feed.

The prefix is the embedding side plus blocks[:k]; the *boundary* is the hidden state it hands to
block k (or to the final norm when every block is frozen). We keep the model's own forward and
change only, per instance, the forwards of the prefix modules:

- every prefix module runs under `torch.no_grad()` and stays in eval mode even when Trainer calls
  `model.train()`, so no graph is built through it and dropout never fires there;
- the last prefix module (the *boundary source*) can *return an injected boundary* instead of
  computing one, while the modules before it skip their work (`inject`): the cache's fast path;
- the boundary source's output can be *captured* for storing in a cache (`capture`).

On a whole-batch cache hit the prefix modules are not even called: `inject` swaps each for a
parameter-free stand-in in its parent, so nothing of the prefix runs, hooks included (FSDP's
all-gathers), and no placeholder of size [B, T, H] is made.

Long because the three routes of a prefix module (computed, placeholder, stand-in) share one state
and one output form (`OutputSpec`, kept as `_ff_spec`), and are easiest to check side by side.

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
import time
from dataclasses import dataclass

import torch

try:  # a torch built without distributed has no DTensor (and nothing sharded)
    from torch.distributed.tensor import DTensor
except ImportError:  # pragma: no cover
    DTensor = None
from torch import nn

from . import _patch
from ._hf_compat import input_require_grads_enabled, zero3_partitioned
from .families import ModelParts, UnsupportedModelError, probe_inputs, run_model
from .trace import eval_mode, run_until

OWNER = "prefix"  # the owner of this module's per-instance patches (fastfreeze._patch)


@dataclass
class _Capture:
    boundary: torch.Tensor | None = None
    stop: bool = False  # raise BoundaryReached once captured: the precompute pass needs no suffix


class BoundaryReached(Exception):
    """Raised inside the model's forward by `capture(stop=True)` once the boundary is known."""


class _State:
    """Shared, per-model mutable state of the prefix (deep-copied along with the model)."""

    def __init__(self) -> None:
        self.injected: torch.Tensor | None = None
        self.capture: _Capture | None = None
        self.boundary_requires_grad = False  # set under reentrant checkpointing of the suffix
        self.prefix_calls = 0  # how many times the prefix really ran (tests and logs)
        self.prefix_tokens = 0  # how many (padded) tokens it ran on: a partial cache hit runs only the missing ones
        self.standin_calls = 0  # how many prefix modules were swapped out for a stand-in (tests)
        self.offloaded = False
        # Prefix run times, for the "prefix time saved" estimate: (start, end, tokens) per run, where
        # start/end are perf_counter floats on CPU or CUDA events (read lazily, no sync in the step).
        self.t0 = None
        self.timings: list = []
        self.seconds = 0.0
        self.tokens = 0
        # Probe controls (fastfreeze.probe): run the model's own forward, fill placeholders with NaN,
        # or skip only some modules under injection.
        self.bypass = False
        self.fill = 0.0
        self.skip_only: set | None = None


def _clock(t):
    if isinstance(t, torch.Tensor) and t.is_cuda:
        ev = torch.cuda.Event(enable_timing=True)
        ev.record()
        return ev
    return time.perf_counter()


def _always_eval(self: nn.Module, mode: bool = True) -> nn.Module:
    # Trainer calls model.train() every step; the frozen prefix must stay deterministic.
    return nn.Module.train(self, False)


def _call_original(module: nn.Module, args, kwargs):
    previous = _patch.replaced(module, "forward", OWNER)  # e.g. an accelerate hook or a kernel swap
    if previous is not None:
        return previous(*args, **kwargs)
    return type(module).forward(module, *args, **kwargs)


def _first_arg(args, kwargs):
    return args[0] if args else next(iter(kwargs.values()), None)


@dataclass(frozen=True)
class OutputSpec:
    """A prefix module's output form, recorded (as the instance attribute `_ff_spec`, through `_patch`) on
    its first computed run: how to stand in for that output when an injected boundary makes its work
    useless. `kind` "pass": the output is the input itself; "fill": a tensor of the input's leading
    shape + `tail`, of `dtype`. `container`: None for a bare tensor, else the tuple or list type of a
    `length`-item output whose first item is the hidden state and whose extra items become None (the
    install probe proves the suffix does not read them, or refuses the cache)."""

    kind: str
    container: type | None = None
    length: int = 0
    tail: tuple = ()
    dtype: torch.dtype | None = None


def _output_spec(first, out) -> OutputSpec | None:
    """The `OutputSpec` of a module that took `first` and returned `out`; None when the output's shape
    is not derived from the input (the module then simply runs)."""
    n = _items(out)
    tensor = out[0] if n else out
    if not (isinstance(first, torch.Tensor) and isinstance(tensor, torch.Tensor)):
        return None
    form = dict(container=type(out) if n else None, length=n)
    if tensor.shape == first.shape and tensor.dtype == first.dtype:
        return OutputSpec("pass", **form)
    if tuple(tensor.shape[:first.dim()]) != tuple(first.shape):
        return None
    return OutputSpec("fill", tail=tuple(tensor.shape[first.dim():]), dtype=tensor.dtype, **form)


def _items(out) -> int:
    """How many items a tuple / list output holds (0 for a bare tensor or an empty container)."""
    return len(out) if isinstance(out, (tuple, list)) else 0


def _hidden(out):
    """The hidden state of a module output (a bare tensor, or the first item of a tuple / list)."""
    return out[0] if _items(out) else out


def _as_output(tensor: torch.Tensor, spec: OutputSpec | None):
    """`tensor` in the recorded output form (bare when there is no record)."""
    if spec is None or spec.container is None:
        return tensor
    return spec.container([tensor, *([None] * (spec.length - 1))])


def _skipped_output(module: nn.Module, args, kwargs, fill: float):
    """The cheap stand-in for a prefix module's output under injection (see `OutputSpec`); None
    when the module has to run after all."""
    spec: OutputSpec | None = module.__dict__.get("_ff_spec")
    first = _first_arg(args, kwargs)
    if spec is None or not isinstance(first, torch.Tensor):
        return None
    if spec.kind == "pass":
        return _as_output(first, spec)
    value = fill if spec.dtype.is_floating_point else 0
    return _as_output(torch.full((*first.shape, *spec.tail), value, dtype=spec.dtype, device=first.device), spec)


def _injected_output(module: nn.Module, state: "_State"):
    return _as_output(state.injected, module.__dict__.get("_ff_spec"))


def _standin_output(spec: OutputSpec, first, fill: float):
    """A prefix module's stand-in output as a stride-0 view of one scalar: the suffix never reads
    it (the install probe fills it with NaN to prove that), so nothing of size [B, T, H] is made."""
    if spec.kind == "pass":
        return _as_output(first, spec)
    value = fill if spec.dtype.is_floating_point else 0
    scalar = torch.full((), value, dtype=spec.dtype, device=first.device)
    return _as_output(scalar.expand(*first.shape, *spec.tail), spec)


class _StandIn(nn.Module):
    """Takes a prefix module's place in its parent during a whole-batch cache hit (see
    `FrozenPrefix.inject`): no parameters, no hooks, the recorded output form. The boundary
    source's stand-in returns the injected boundary."""

    def __init__(self, original: nn.Module, spec: OutputSpec | None, state: "_State", source: bool):
        super().__init__()
        self.spec, self.state, self.source = spec, state, source
        self.__dict__["original"] = original  # a plain attribute: its parameters must not show here

    @torch.compiler.disable
    def forward(self, *args, **kwargs):
        if self.source:
            return _as_output(self.state.injected, self.spec)
        first = _first_arg(args, kwargs)
        if not isinstance(first, torch.Tensor):  # an output form the recorded spec cannot derive
            return self.original(*args, **kwargs)
        return _standin_output(self.spec, first, self.state.fill)


@torch.compiler.disable
def _prefix_forward(self: nn.Module, *args, **kwargs):
    # Kept out of torch.compile on purpose: the prefix runs eagerly under no_grad (per-instance flags
    # would make Dynamo recompile once per module), and only the trainable suffix is compiled.
    state: _State = self._ff_state
    if state.bypass:  # the probe's reference: the model's own forward, autograd as the caller has it
        return _call_original(self, args, kwargs)
    if state.injected is not None and self._ff_is_boundary_source:
        return _injected_output(self, state)
    if state.injected is not None and (state.skip_only is None or self in state.skip_only):
        out = _skipped_output(self, args, kwargs, state.fill)
        if out is not None:
            return out
    first = _first_arg(args, kwargs)
    if self._ff_is_first and state.injected is None:
        state.t0 = _clock(first)
    with torch.no_grad():
        out = _call_original(self, args, kwargs)
    if state.injected is not None:
        return out  # a module that could not be skipped ran on placeholder inputs; nothing to record
    if not _patch.overridden(self, "_ff_spec"):
        _patch.patch(self, "_ff_spec", _output_spec(first, out), OWNER)
    if self._ff_is_boundary_source:
        hidden = _hidden(out)
        state.prefix_calls += 1
        state.prefix_tokens += hidden.shape[:-1].numel()
        if state.t0 is not None:
            state.timings.append((state.t0, _clock(hidden), hidden.shape[:-1].numel()))
            state.t0 = None
        if state.capture is not None:
            state.capture.boundary = hidden
            if state.capture.stop:
                raise BoundaryReached
        if state.boundary_requires_grad and torch.is_grad_enabled():
            # Reentrant checkpointing drops parameter grads of a segment whose inputs need no grad.
            hidden = hidden.detach().requires_grad_(True)
            out = type(out)([hidden, *out[1:]]) if _items(out) else hidden
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
        # One stand-in per module, made once: torch.compile guards on the modules it calls, so a
        # fresh stand-in every warm step would recompile every step (and hit the recompile limit).
        self._standins: dict[int, _StandIn] = {}

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
        self._restore_standins()
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

    def _restore_standins(self) -> None:
        """Put back every prefix module that a stand-in still replaces in its parent (an `inject` block
        left without its exit: a generator dropped mid-step)."""
        for path, m in zip(self.names, self.modules):
            parent_path, _, name = path.rpartition(".")
            parent = self.model.get_submodule(parent_path) if parent_path else self.model
            current = getattr(parent, name, None)
            if current is not m and getattr(current, "__dict__", {}).get("original") is m:  # our stand-in
                setattr(parent, name, m)

    def _check_boundary_flow(self) -> None:
        """Probe forward: the boundary source's output must be exactly the boundary sink's input.
        If the model transforms the hidden state in between (in its own forward), a cached
        boundary would be wrong, so refuse with the reason."""
        def forward_watching_sink():  # the whole forward (stop=False): each hook keeps its module's last call
            return run_until(lambda: run_model(self.model, probe_inputs(self.model)), self.boundary_sink, stop=False)

        with eval_mode(self.model), torch.no_grad():
            source = run_until(forward_watching_sink, self.boundary_source, output=True, stop=False)
        out, sink = _hidden(source.output), source.result.hidden
        if out is None or not (out is sink or _same_view(out, sink)):
            raise UnsupportedModelError(
                f"{type(self.model).__name__}: the output of {self.names[-1]} is not passed unchanged to "
                f"{self.boundary_sink_name}; the model's forward transforms it in between, so the frozen prefix "
                "cannot be split there. Freeze with `freeze_bottom_layers` only (no fast path), or add a "
                "FamilySpec for this family in fastfreeze/families.py."
            )

    # ---------------------------------------------------------------- run-time modes
    @contextlib.contextmanager
    def inject(self, boundary: torch.Tensor | None, swap: bool = True):
        """Within this block the model's forward uses `boundary` ([B, T, H]) as the prefix output.

        With `swap=True` every prefix module whose output form is known (it ran once) is swapped, in
        its parent, for a parameter-free stand-in, so it is not called at all: no FSDP all-gather of
        its shard, no hooks, and stand-in outputs are stride-0 views (no [B, T, H] allocation).
        `swap=False` calls the modules, which return placeholders: what a rank must do under FSDP
        when another rank runs the prefix in the same step (its all-gathers must be matched)."""
        if boundary is None:
            yield
            return
        previous = self.state.injected
        self.state.injected = boundary
        swapped: list = []
        try:  # the swap inside: one that fails halfway is undone as far as it got
            if swap:
                self._swap_in_standins(swapped)
            yield
        finally:
            for parent, name, original in reversed(swapped):
                setattr(parent, name, original)
            self.state.injected = previous

    def _swap_in_standins(self, swapped: list) -> None:
        """Replace each skippable prefix module in its parent (the probe's `skip_only` restricts
        which), appending (parent, name, original) to `swapped` as each one is made, in swap order."""
        only = self.state.skip_only
        for path, m in zip(self.names, self.modules):
            spec = m.__dict__.get("_ff_spec")
            source = m is self.boundary_source
            if not source and (spec is None or (only is not None and m not in only)):
                continue
            parent_path, _, name = path.rpartition(".")
            parent = self.model.get_submodule(parent_path) if parent_path else self.model
            if getattr(parent, name, None) is not m:
                continue  # not reachable by this name (already swapped, or wrapped): it just runs
            standin = self._standins.get(id(m))
            if standin is None or standin.spec is not spec:
                standin = self._standins[id(m)] = _StandIn(m, spec, self.state, source)
            setattr(parent, name, standin)
            swapped.append((parent, name, m))
            self.state.standin_calls += 1

    @contextlib.contextmanager
    def capture(self, stop: bool = False):
        """Within this block, the boundary computed by the prefix is recorded in the yielded object.
        With `stop=True` the forward ends right after the prefix (the rest of the model never runs)."""
        previous = self.state.capture
        cap = self.state.capture = _Capture(stop=stop)
        try:
            yield cap
        except BoundaryReached:
            if not stop:
                raise
        finally:
            self.state.capture = previous

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
        calls, tokens, mark = self.state.prefix_calls, self.state.prefix_tokens, self.timing_mark()
        try:
            yield
        finally:
            self.state.prefix_calls, self.state.prefix_tokens = calls, tokens
            self.discard_timings(mark)

    def timing_mark(self) -> int:
        """A position in the prefix run-time record (see `discard_timings`)."""
        return len(self.state.timings)

    def discard_timings(self, mark: int) -> None:
        """Forget the prefix runs timed since `mark` (e.g. a forward that included compilation)."""
        del self.state.timings[mark:]

    def seconds_per_token(self) -> float | None:
        """Measured wall time of the prefix per (padded) token, over every run so far; None before any."""
        st = self.state
        for start, end, n in st.timings:
            if isinstance(start, float):
                st.seconds += end - start
            else:
                end.synchronize()
                st.seconds += start.elapsed_time(end) / 1000.0
            st.tokens += n
        st.timings.clear()
        return st.seconds / st.tokens if st.tokens else None

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
