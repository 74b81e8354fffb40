"""`fastfreeze estimate` as data and as text: parameters, step-time ratios, memory, cache size and when the cache pays.

Usage::

    est = estimate(ModelShape.from_config("config.json", seq=2048, batch=8), k=16,
                   dataset_tokens=5e8, epochs=3, dev=Device.named("h100"), read_bytes_per_s=2e9)
    print(render(est))
"""
from __future__ import annotations

from dataclasses import dataclass

from .flops import predicted_ratio
from .memory import predict, weight_state_bytes
from .payoff import MEASURED_READ, Device, Payoff, cache_bytes, payoff
from .shape import ModelShape

__all__ = ["Estimate", "estimate", "render"]

# (label, flop-model arm, memory-model arm): naive freezing, fastfreeze without a cache hit, with one.
SETUPS = (("naive freezing", "naive", "naive"), ("fastfreeze cold", "ff", "ff"), ("fastfreeze warm", "ff-warm", "ff-warm"))


@dataclass
class Estimate:
    shape: ModelShape
    k: int
    dataset_tokens: float
    epochs: int
    trainable: int
    frozen: int
    ratios: dict  # (arm, ckpt) -> step time / naive's at the same ckpt
    activations: dict  # (arm, ckpt) -> {"saved_bytes", "held_bytes"}
    weight_state: dict  # "fastfreeze" / "full fine-tuning" -> {"gradient_bytes", "optimizer_bytes"}
    cache_bytes: float
    device: Device | None
    read_bytes_per_s: float
    payoff: dict  # ckpt -> Payoff (with a device)
    read_source: str = "given"


def estimate(shape: ModelShape, k: int, dataset_tokens: float, epochs: int, dev: Device | None = None,
             read_bytes_per_s: float | None = None, write_bytes_per_s: float | None = None,
             read_source: str = "given") -> Estimate:
    """Everything `fastfreeze estimate` prints, from the shapes (and a device for the time verdict); the
    read rate defaults to the measured one (``payoff.MEASURED_READ``)."""
    if read_bytes_per_s is None:
        read_bytes_per_s, read_source = MEASURED_READ.bytes_per_s, MEASURED_READ.source
    if dataset_tokens <= 0 or epochs < 1:
        raise ValueError("dataset_tokens must be positive and epochs >= 1")
    trainable, frozen = shape.trainable_params(k), shape.frozen_params(k)
    ratios, acts = {}, {}
    for _, arm, mem_arm in SETUPS:
        for ckpt in (False, True):
            ratios[(arm, ckpt)] = predicted_ratio(shape, arm, k, ckpt)
            acts[(arm, ckpt)] = predict(shape, mem_arm, k, ckpt, fused=False, kernels="torch")
    full = trainable + frozen
    weights = {"fastfreeze": weight_state_bytes(trainable, shape.dtype_bytes),
               "full fine-tuning": weight_state_bytes(full, shape.dtype_bytes)}
    pays = {}
    if dev is not None:
        for ckpt in (False, True):
            pays[ckpt] = payoff(shape, k, ckpt, dev, read_bytes_per_s, dataset_tokens, epochs, write_bytes_per_s)
    return Estimate(shape, k, dataset_tokens, epochs, trainable, frozen, ratios, acts, weights,
                    cache_bytes(shape, dataset_tokens), dev, read_bytes_per_s, pays, read_source)


def _b(n: float) -> str:
    for unit, size in (("TiB", 1 << 40), ("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= size:
            return f"{n / size:.2f} {unit}"
    return f"{n:.0f} B"


def _p(n: int) -> str:
    return f"{n / 1e9:.2f} B" if n >= 1e9 else f"{n / 1e6:.1f} M"


def _pays_lines(e: Estimate, ckpt: bool, p: Payoff) -> list[str]:
    verdict = "reading beats recomputing" if p.read_beats_recompute else "recomputing beats reading"
    paid = (f"the cache has paid for itself by the end of epoch {p.paid_off_epoch}" if p.paid_off_epoch
            else "the cache never pays (a warm step is not faster than a cold one)")
    lines = [f"  checkpointing {'on' if ckpt else 'off'}: prefix {p.prefix_s * 1e6:.3f} us/token vs read "
             f"{p.read_s * 1e6:.3f} us/token: {verdict} ({p.prefix_s / p.read_s:.2f}x); step cold {p.cold_s * 1e6:.3f}, "
             f"warm {p.warm_s * 1e6:.3f} us/token; {paid}"]
    for epoch, without, with_cache in p.epoch_hours:
        lines.append(f"    after epoch {epoch}: {without:.2f} h without the cache, {with_cache:.2f} h with it")
    return lines


def render(e: Estimate) -> str:
    s = e.shape
    out = [f"fastfreeze estimate: {s.name} (L={s.layers}, H={s.hidden}, I={s.intermediate}, heads {s.heads}/{s.kv_heads}, "
           f"V={s.vocab}, {s.dtype}), k={e.k}, seq {s.seq}, batch {s.batch}, {e.dataset_tokens:,.0f} dataset tokens, "
           f"{e.epochs} epoch(s)", "",
           f"parameters: trainable {_p(e.trainable)}, frozen {_p(e.frozen)} "
           f"({100 * e.frozen / (e.frozen + e.trainable):.1f}% frozen: embedding + {e.k} blocks)", "",
           "step time / naive freezing (FLOP model; cold = the prefix runs, warm = its boundary comes from the cache):"]
    for label, arm, _ in SETUPS[1:]:
        out.append(f"  {label:<16} no ckpt {e.ratios[(arm, False)]:.3f} ({1 / e.ratios[(arm, False)]:.2f}x tokens/s)"
                   f"   ckpt {e.ratios[(arm, True)]:.3f} ({1 / e.ratios[(arm, True)]:.2f}x)")
    out += ["", f"memory per step (batch {s.batch} x {s.seq}, torch kernels; activations held at the end of the forward):"]
    for label, arm, _ in SETUPS:
        a, c = e.activations[(arm, False)], e.activations[(arm, True)]
        out.append(f"  {label:<16} activations {_b(a['held_bytes'])} (ckpt {_b(c['held_bytes'])})")
    for label, w in e.weight_state.items():
        out.append(f"  {label:<16} gradients {_b(w['gradient_bytes'])}, AdamW state {_b(w['optimizer_bytes'])}")
    out += ["", f"cache size: {_b(e.cache_bytes)} ({s.hidden} x {s.dtype_bytes} B = {s.hidden * s.dtype_bytes} B per token, "
                f"stored once for all epochs); cap it with FreezeConfig(cache_max_bytes=...)"]
    if e.device is None:
        out.append("does the cache pay: pass --device <card> or --flops <achieved FLOP/s> to decide")
    else:
        out += ["", f"does the cache pay on {e.device.name}, {e.device.flops / 1e12:.3g} TFLOP/s achieved, "
                    f"reading {e.read_bytes_per_s / 1e9:.3g} GB/s ({e.read_source}):"]
        for ckpt, p in e.payoff.items():
            out += _pays_lines(e, ckpt, p)
    return "\n".join(out) + "\n"
