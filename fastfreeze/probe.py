"""The install-time safety net: the fast path must compute what the model computes, or be refused.

On a tiny probe batch, `probe_fast_path` runs three things and compares logits and the gradient of
every trainable parameter:

1. the *reference*: the model's own forward + backward with the plain freeze (prefix patches
   bypassed, autograd as the caller has it);
2. the *computed* fast path: the prefix under no_grad, eval mode, boundary handed on;
3. the *injected* fast path, as on a cache hit: the boundary of batch A injected after batch B ran
   (so stale side effects show), every other prefix module replaced by a NaN-filled stand-in (so a
   suffix that reads anything made in the prefix besides the boundary shows as NaN or a mismatch).

(2) differing from (1) refuses the fast path; (3) differing, or a boundary that is not one
[batch, seq, hidden] tensor, refuses only the cache, with the reason. Nothing here depends on the
model's architecture: it cannot be fooled by a family the table does not know.

Memory: never more than one training step of the same model. Each run's gradients exist only
inside that run: they are reduced at once, tensor by tensor, to a few numbers (`_grad_stats`: two
fixed pseudo-random projections, the L2 norm, the largest magnitude), and only those numbers and
the probe batch's logits are compared. A run reduces each gradient in a tensor hook the moment
autograd produces it, so only the gradients in flight exist at once (never more than a training
step holds in `.grad`, which also keeps the optimizer state), plus the activations of 16 tokens;
under FSDP2, the `.grad` shards a training step holds too. Keeping every gradient of three runs, as full-tensor comparison would, costs about 3x the
trainable gradients on top of the model: measured and predicted for 1B / 8B / 70B in
docs/placement.md. Why the projections suffice: the faults the probe exists for (a wrong or stale
tensor, zeros, a missing or extra gradient) change a gradient by O(1) of its norm, and a fixed
projection r (a fixed pseudo-random pattern) shows a difference d as <d, r> ~ |d|_2 rms(r), i.e. an O(1) relative change, while
rounding gives a few ulp; the norm and max magnitude catch zeros and scale errors outright.

A model sharded by FSDP2 (the probe then runs when train() starts, see `fastfreeze.placement`) is
probed as it trains: every rank runs the same probe batch (its collectives pair up), the gradients
are the reduce-scattered `.grad` shards (every rank saw the same batch, so the shard of the mean is
the shard of the gradient), and every difference is the maximum over ranks, so every rank takes the
same branch and reaches the same verdict.

Usage (apply_freeze does this unless FreezeConfig(probe=False)):
    report = probe_fast_path(model, prefix); report.cache_refusal   # None: the cache may serve it
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import torch
from torch import nn

from ._dist import ranks_agree
from ._hf_compat import text_config
from .families import UnsupportedModelError
from .prefix import FrozenPrefix
from .tolerance import rel_diff, tolerance
from .trace import eval_mode, probe_inputs, run_model, run_until


@dataclass
class ProbeReport:
    """What the probe checked and found; `cache_refusal` is why the cache cannot serve this model."""

    seconds: float
    trainable_tensors: int
    max_rel_diff: float
    cache_refusal: str | None
    eval_prefix_differs: bool = False  # stochastic in training, run in eval mode (allow_eval_prefix=True)

    def __str__(self) -> str:
        cache = "cache can serve it" if self.cache_refusal is None else f"cache refused: {self.cache_refusal}"
        noise = ("; the frozen layers are stochastic in training but run in eval mode (allow_eval_prefix=True), "
                 "so the run differs from plain freezing by that noise" if self.eval_prefix_differs else "")
        return (f"probe: fast path == the model's own forward+backward on a probe batch (logits and "
                f"{self.trainable_tensors} trainable gradients, max rel diff {self.max_rel_diff:.1e}); {cache}; "
                f"{self.seconds:.2f} s (skip with FreezeConfig(probe=False)){noise}")


def _logits(out) -> torch.Tensor:
    logits = getattr(out, "logits", None)
    if logits is None and isinstance(out, (tuple, list)):
        logits = out[0]
    if not isinstance(logits, torch.Tensor):
        raise UnsupportedModelError(f"the model's forward returned no logits tensor ({type(out).__name__})")
    return logits


# What the probe's stand-ins hold (every prefix output but the boundary): NaN, so a suffix that reads
# one shows in the logits or gradients whatever it does with it (a zero read may change nothing).
_STANDIN_FILL = float("nan")
_CHUNK = 1 << 22  # elements per slice when reducing a gradient: bounds the reduction's scratch memory
_PERIOD = 1021  # the projection pattern's length (prime: no alignment with power-of-two tensor shapes)


def _pattern(device: torch.device) -> torch.Tensor:
    """[_PERIOD, 2] float32 fixed pseudo-random weights (sin of the index: the same on every device and
    process, no RNG drawn); a gradient is projected on this pattern repeated along its flat index."""
    idx = torch.arange(_PERIOD, dtype=torch.float64, device=device)[:, None]
    return torch.sin(idx * torch.tensor([0.7311, 1.6180], dtype=torch.float64, device=device) + 0.25).float()


def _rows_stats(rows: torch.Tensor, pattern: torch.Tensor) -> torch.Tensor:
    """[sum of <row, pattern[:, 0]>, ... [:, 1], sum of |row|^2] of a [n, m <= _PERIOD] float32 view: one
    product and one norm pass, per-row partial sums (m terms in float32) added up in float64."""
    proj = (rows @ pattern[:rows.shape[1]]).double().sum(0)
    sq = torch.linalg.vector_norm(rows, dim=1).double().pow(2).sum()
    return torch.cat([proj, sq[None]])


def _grad_stats(g: torch.Tensor | None) -> torch.Tensor:
    """[<g, r1>, <g, r2>, |g|_2, max|g|] (float64; r1, r2: `_pattern` repeated along g's flat index),
    slice by slice, a matrix product per slice: memory-bound, a fraction of the backward that made g."""
    if g is None:
        return torch.zeros(4, dtype=torch.float64)
    if hasattr(g, "to_local"):  # a DTensor shard (FSDP2): its local part
        g = g.to_local()
    flat, out = g.detach().reshape(-1), torch.zeros(4, dtype=torch.float64, device=g.device)
    pattern = _pattern(g.device)
    step = _CHUNK - _CHUNK % _PERIOD  # slices start in phase with the pattern
    for start in range(0, flat.numel(), step):
        part = flat[start:start + step].float()
        rows = part.numel() // _PERIOD
        if rows:
            out[:3] += _rows_stats(part[:rows * _PERIOD].view(rows, _PERIOD), pattern)
        if part.numel() > rows * _PERIOD:
            out[:3] += _rows_stats(part[rows * _PERIOD:][None], pattern)
        lo, hi = torch.aminmax(part)
        out[3] = torch.maximum(out[3], torch.maximum(-lo, hi).double())
    out[2] = out[2].sqrt()
    return out.cpu()


def _stats_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    """Relative difference of two `_grad_stats`: projections against |g|_2 rms(r) (rms(sin) ~ 1/sqrt 2),
    norm against the norm, max magnitude against itself; inf when a is not finite and b is."""
    if not torch.isfinite(a).all() and torch.isfinite(b).all():
        return float("inf")
    norm, peak = b[2].clamp_min(1e-30), b[3].clamp_min(1e-30)
    proj = (a[:2] - b[:2]).abs().max() / (norm * 0.5 ** 0.5)
    return max(proj.item(), ((a[2] - b[2]).abs() / norm).item(), ((a[3] - b[3]).abs() / peak).item())


def _sharded(params: list[nn.Parameter]) -> bool:
    return any(hasattr(p, "to_local") for p in params)


def _forward_backward(model: nn.Module, inputs: dict, params: list[nn.Parameter]) -> list[torch.Tensor]:
    """Logits, then `_grad_stats` of d(sum(w * logits))/dp for every trainable p (w a fixed random
    weight on real tokens). Sharded parameters (FSDP2) get their gradient through backward()
    (the reduce-scattered shard in .grad, cleared again); others through autograd.grad, which
    leaves .grad and any engine hook on it untouched, each gradient reduced by a tensor hook as
    autograd produces it (so at most the gradients in flight exist at once, not all of them)."""
    logits = _logits(run_model(model, inputs))
    w = torch.randn(logits.shape, generator=torch.Generator().manual_seed(3)).to(logits.device)
    mask = inputs.get("attention_mask")
    if mask is not None and logits.dim() == 3 and tuple(mask.shape) == tuple(logits.shape[:2]):
        w = w * mask[..., None].to(w.dtype)
    loss = (logits.float() * w).sum()
    logits = logits.detach()
    if not (loss.requires_grad and params):
        return [logits] + [_grad_stats(None) for _ in params]
    if _sharded(params):
        loss.backward()
        del loss
        # Read the parameters again: FSDP2's lazy init (on the first forward, maybe this one) may
        # re-register them (e.g. after accelerate loaded them with assign=True).
        params = [p for p in model.parameters() if p.requires_grad]
        stats = [_grad_stats(p.grad) for p in params]
        for p in model.parameters():
            p.grad = None  # a training step must start from no gradient, as without the probe
        return [logits] + stats
    stats: list = [None] * len(params)

    def reducer(i: int):
        def hook(g: torch.Tensor) -> torch.Tensor:
            # Reduced the moment autograd produces it; what autograd.grad returns in its place is a
            # stride-0 view of one zero, so no gradient outlives this hook.
            stats[i] = _grad_stats(g)
            return g.new_zeros(()).expand_as(g)
        return hook

    handles = [p.register_hook(reducer(i)) for i, p in enumerate(params)]
    try:
        torch.autograd.grad(loss, params, allow_unused=True)
    finally:
        for h in handles:
            h.remove()
    return [logits] + [_grad_stats(None) if st is None else st for st in stats]


def _max_diff(got: list[torch.Tensor], ref: list[torch.Tensor], sharded: bool = False) -> float:
    diff = max((rel_diff(a, b) for a, b in zip(got[:1], ref[:1])), default=0.0)
    diff = max([diff] + [_stats_diff(a, b) for a, b in zip(got[1:], ref[1:])])
    if sharded:
        # Each rank compared its own shards: the verdict (and every branch on it) is the worst rank's.
        diff = ranks_agree(diff, ref[0].device if ref else torch.device("cpu"), "max")
    return diff


def _rng_states(cuda: bool) -> list[torch.Tensor]:
    return [torch.get_rng_state()] + ([torch.cuda.get_rng_state()] if cuda else [])


def _draws_in_training(model: nn.Module, prefix: FrozenPrefix, inputs: dict) -> bool:
    """True if the frozen prefix, run in training mode as the plain recipe runs it, draws random numbers
    (dropout, router jitter, random hash rotations) before the boundary reaches its sink."""
    cuda = inputs["input_ids"].is_cuda
    seen: dict = {}
    modules = [sub for m in prefix.modules for sub in m.modules()]
    try:
        for sub in modules:
            sub.training = True  # past the prefix's always-eval train(): the recipe trains in train mode
        before = _rng_states(cuda)
        with torch.no_grad(), prefix.reference():
            # A sharded model runs to the end: a forward cut short would leave FSDP units gathered mid-run.
            run_until(lambda: run_model(model, inputs), prefix.boundary_sink, stop=not prefix.sharded(),
                      on_reach=lambda _r: seen.setdefault("after", _rng_states(cuda)))
    finally:
        for sub in modules:
            sub.training = False
    after = seen.get("after", before)
    return any(not torch.equal(x, y) for x, y in zip(before, after))


def probe_fast_path(model: nn.Module, prefix: FrozenPrefix, allow_eval_prefix: bool = False) -> ProbeReport:
    """Prove on a probe batch that the fast path equals the model's own forward+backward; raise
    UnsupportedModelError (with the reason) if it does not. See the module docstring."""
    t0 = time.perf_counter()
    params = [p for p in model.parameters() if p.requires_grad]
    dtype = next(prefix.parameters()).dtype
    a = probe_inputs(model, batch=2, seq=8, pad=3, seed=1)
    b = probe_inputs(model, batch=2, seq=8, pad=3, seed=2)
    devices = [torch.cuda.current_device()] if a["input_ids"].is_cuda else []
    # The probe's own prefix runs must not show in the run's counters and timings.
    with torch.random.fork_rng(devices=devices), prefix.uncounted(), eval_mode(model):
        stochastic = _draws_in_training(model, prefix, a)
        if stochastic and not allow_eval_prefix:
            raise UnsupportedModelError(
                f"{type(model).__name__}: the frozen layers draw random numbers in training (dropout, router "
                "jitter or random hashing in the embedding side or layers[:k]); fastfreeze runs them in eval "
                "mode, so this run would differ from plain freezing. Set those probabilities to 0 in the model "
                "config (e.g. hidden_dropout / embd_pdrop / router_jitter_noise = 0) for an exact run, or pass "
                "FreezeConfig(allow_eval_prefix=True) to accept a deterministic (eval-mode) prefix knowingly."
            )
        with prefix.reference():
            ref = _forward_backward(model, a, params)
        with prefix.capture() as cap:
            got = _forward_backward(model, a, params)
        diff = _max_diff(got, ref, _sharded(params))
        if not diff <= tolerance(dtype):
            raise UnsupportedModelError(
                f"{type(model).__name__}: the no-grad prefix changes the result (max rel diff {diff:.2e} in "
                f"logits or gradients vs the model's own forward with the same freeze), so fastfreeze "
                "cannot run this model's frozen layers as a prefix. Freeze with "
                "`fastfreeze.freeze_bottom_layers` and a plain Trainer instead."
            )
        refusal = _cache_refusal(model, prefix, cap.boundary, a, b, params, ref, dtype)
    return ProbeReport(time.perf_counter() - t0, len(params), diff, refusal, stochastic)


def _cache_refusal(model, prefix: FrozenPrefix, boundary, a: dict, b: dict, params, ref, dtype) -> str | None:
    """Why a cached boundary cannot stand in for the prefix on this model (None: it can)."""
    cfg = text_config(model.config)
    want = (*a["input_ids"].shape, getattr(cfg, "hidden_size", None))
    if not isinstance(boundary, torch.Tensor) or tuple(boundary.shape) != want:
        shape = tuple(boundary.shape) if isinstance(boundary, torch.Tensor) else type(boundary).__name__
        return (f"the boundary ({prefix.names[-1]}'s output) is {shape}, not one [batch, seq, hidden] = {list(want)} "
                "tensor (multi-stream or sequence-first residual); the cache stores [batch, seq, hidden] rows")
    boundary = boundary.detach().clone()
    others = [m for m in prefix.modules if m is not prefix.boundary_source]

    def injected_diff(only) -> float:
        with torch.no_grad():
            run_model(model, b)  # leave batch B's side effects behind, if the model keeps any
        try:
            with prefix.inject(boundary, only=only, fill=_STANDIN_FILL):
                return _max_diff(_forward_backward(model, a, params), ref, _sharded(params))
        except Exception:  # a stand-in the suffix cannot digest: a refusal, not a crash
            return float("inf")

    diff = injected_diff(None)
    if diff <= tolerance(dtype):
        return None
    culprits = [name for name, m in zip(prefix.names, prefix.modules)
                if m in others and not injected_diff({m}) <= tolerance(dtype)]
    if culprits:
        return (f"the suffix reads tensors made inside the prefix besides the boundary (outputs of {culprits}); "
                "a cached boundary cannot stand in for them")
    spec = prefix.boundary_source.__dict__.get("_ff_spec")  # an OutputSpec, or None
    if spec is not None and spec.length > 1:
        return (f"the suffix reads the extra outputs of {prefix.names[-1]} besides its hidden state; the cache "
                "stores only the hidden state")
    return (f"injecting a cached boundary changes the result (max rel diff {diff:.2e}): the model keeps state "
            "from the prefix beyond the boundary")
