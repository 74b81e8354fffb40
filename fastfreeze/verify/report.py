"""What `verify` returns and how it is judged: tolerances from the dtype, per-arm results, the printed report.

Usage:
    Tolerances.for_dtype("bf16", steps=8).loss_rtol      # 4.4e-2
    print(report); report.passed; report.to_dict()
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

__all__ = ["ArmResult", "Tolerances", "VerifyError", "VerifyReport", "format_report", "loss_ok"]

# Unit roundoff u of the compute dtype (half the spacing of numbers in [1, 2)).
UNIT_ROUNDOFF = {"fp32": 2.0 ** -24, "bf16": 2.0 ** -8, "fp16": 2.0 ** -11}
FP32_FLOOR = 1e-5  # the parity suite's fp32 tolerance (tests/parity)
# Why: both arms run the same math; fused kernels round once where eager ops round several times, so
# one step differs by a few u, and independent rounding differences add up like a random walk over
# the steps (sqrt). In fp32 the 1e-5 floor (~170 u, the parity suite's tolerance) applies.
TOLERANCE_RULE = "max(1e-5, 4 * u * sqrt(steps)), u = unit roundoff of the dtype (fp32 2^-24, bf16 2^-8, fp16 2^-11)"


class VerifyError(ValueError):
    """Bad input to `fastfreeze verify` (path, column, memory); the message names the fix. CLI exit code 2."""


@dataclass(frozen=True)
class Tolerances:
    """Pass thresholds: per micro-batch |loss_ff - loss_ref| <= loss_rtol * |loss_ref|; per trainable
    tensor max|w_ff - w_ref| <= param_rtol * max|w_ref|; frozen tensors bitwise equal to the start."""

    dtype: str
    loss_rtol: float
    param_rtol: float

    @classmethod
    def for_dtype(cls, dtype: str, steps: int) -> "Tolerances":
        """Usage: Tolerances.for_dtype("bf16", steps=8).loss_rtol  # 4.4e-2"""
        if dtype not in UNIT_ROUNDOFF:
            raise VerifyError(f"dtype={dtype!r}; choose one of {sorted(UNIT_ROUNDOFF)}.")
        tol = max(FP32_FLOOR, 4.0 * UNIT_ROUNDOFF[dtype] * math.sqrt(max(1, steps)))
        return cls(dtype=dtype, loss_rtol=tol, param_rtol=tol)


@dataclass
class ArmResult:
    """What one arm measured."""

    name: str
    losses: list[float]
    step_seconds: float  # median seconds per optimizer step after the first (warm-up) step
    peak_memory_bytes: int  # peak above the arm's starting point (weights already loaded)
    frozen: list[str]  # names of parameters that did not train
    frozen_changed: list[str]  # frozen parameters whose bits differ from the initial weights
    kernel_set: str = "torch"
    cache: dict | None = None


@dataclass
class VerifyReport:
    """Result of `verify`. `print(report)` gives the table; `report.passed` the verdict.

    Usage: report = verify(...); sys.exit(0 if report.passed else 1)
    """

    model: str
    frozen_desc: str  # what both arms froze, in words
    num_frozen_layers: int
    dtype: str
    kernels: str
    cache: str | None
    steps: int
    batch_size: int
    grad_accum: int
    device: str
    memory_kind: str
    optim: str
    learning_rate: float
    tolerances: Tolerances
    reference: ArmResult
    fastfreeze: ArmResult
    param_max_rel: float
    param_worst: str
    failures: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not self.failures

    @property
    def verdict(self) -> str:
        return "PASS" if self.passed else "FAIL"

    def to_dict(self) -> dict:
        return {**asdict(self), "verdict": self.verdict}

    def __str__(self) -> str:
        return format_report(self)


def format_report(r: VerifyReport) -> str:
    """The human-readable table of a VerifyReport."""
    tol, ref, ff = r.tolerances, r.reference, r.fastfreeze
    ok = lambda good: "ok" if good else "FAIL"  # noqa: E731
    out = [f"fastfreeze verify: {r.model}, frozen: {r.frozen_desc}",
           f"  {r.steps} steps x batch {r.batch_size} x accumulation {r.grad_accum}, {r.dtype} on {r.device}, "
           f"kernels {r.kernels} (ran: {ff.kernel_set}), cache {r.cache or 'none'}, {r.optim} lr {r.learning_rate:g}",
           f"  tolerances ({tol.dtype}): loss rel <= {tol.loss_rtol:.1e}, trainable params max rel <= "
           f"{tol.param_rtol:.1e}, frozen params bitwise equal", f"  tolerance rule: {TOLERANCE_RULE}", "",
           f"{'step':>5} {'micro':>5}  {'reference loss':>18}  {'fastfreeze loss':>18}  "
           f"{'abs diff':>9}  {'rel diff':>9}"]
    for i, (a, b) in enumerate(zip(ref.losses, ff.losses)):
        diff = abs(b - a)
        rel = diff / abs(a) if a else float("inf") if diff else 0.0
        out.append(f"{i // r.grad_accum + 1:>5} {i % r.grad_accum + 1:>5}  {a:>18.12f}  {b:>18.12f}  "
                   f"{diff:>9.2e}  {rel:>9.2e}  {ok(loss_ok(a, b, tol.loss_rtol))}")
    out += ["",
            f"trainable params: max rel diff {r.param_max_rel:.2e} ({r.param_worst})  "
            f"{ok(r.param_max_rel <= tol.param_rtol)}",
            f"frozen params bitwise unchanged: reference {_yes(ref)}, fastfreeze {_yes(ff)} "
            f"({len(ff.frozen)} tensors)  {ok(not ref.frozen_changed and not ff.frozen_changed)}", "",
            f"{'':<24}{'reference':>14}{'fastfreeze':>14}{'ratio':>10}",
            f"{'step time (median)':<24}{_ms(ref.step_seconds):>14}{_ms(ff.step_seconds):>14}"
            f"{_ratio(ref.step_seconds, ff.step_seconds, 'x faster'):>10}",
            f"{'peak memory ' + r.memory_kind:<24}{_mib(ref.peak_memory_bytes):>14}{_mib(ff.peak_memory_bytes):>14}"
            f"{_ratio(ref.peak_memory_bytes, ff.peak_memory_bytes, 'x less'):>10}"]
    if ff.cache:
        out.append(f"cache: {ff.cache['hits']} hits, {ff.cache['misses']} misses, {ff.cache['entries']} entries")
    out += [f"note: {n}" for n in r.notes]
    out += [f"failure: {f}" for f in r.failures]
    out.append(f"verdict: {r.verdict}")
    return "\n".join(out)


def _yes(arm: ArmResult) -> str:
    return "yes" if not arm.frozen_changed else f"NO ({len(arm.frozen_changed)} changed: {arm.frozen_changed[:3]})"


def _ms(s: float) -> str:
    return "-" if math.isnan(s) else f"{1e3 * s:.1f} ms"


def _mib(b: int) -> str:
    return f"{b / 2 ** 20:.1f} MiB"


def _ratio(a: float, b: float, label: str) -> str:
    return f"{a / b:.2f}{label[:1]}" if b and a and not math.isnan(a) and not math.isnan(b) else "-"


def loss_ok(a: float, b: float, rtol: float) -> bool:
    """The loss tolerance rule: both finite and |b - a| <= rtol * |a|."""
    return math.isfinite(a) and math.isfinite(b) and abs(b - a) <= rtol * abs(a)
