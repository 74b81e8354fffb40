"""Analytic memory model of one training step: activation bytes saved for backward and held at the end of the forward, gradients, optimizer state.

Per token, in bytes, for a Llama block in transformers 5.x with SDPA (e = activation element size,
H hidden, I intermediate, kv = KV heads x head_dim, nh heads, T padded sequence length). Each term is
what an op keeps for its backward (autograd saves an operand only if the other one needs a gradient):
- torch ops, block whose input needs a gradient: each RMSNorm keeps its fp32 copy of x (4H), the rounded
  normalised x for the weight gradient (eH) and 1/rms (4); the q/k/v and MLP projections keep their input
  (2 x eH); SDPA keeps q and its output (2 x eH), k and v (2 x e kv), the log-sum-exp (4 nh) and its mask
  (e T); the MLP keeps gate, silu(gate), up and their product (4 x eI);
- the first trainable block (its input needs no gradient: naive freezing, FastFreeze, the floor) skips the
  first norm's fp32 copy and 1/rms (-(4H + 4));
- Triton kernel set: each RMSNorm keeps x and 1/rms only (eH + 4), SwiGLU keeps gate and up and the
  down projection its output (3 x eI);
- head: final norm as above, the LM head's input (eH), the fp32 log-softmax (4V) and the labels (8); the
  fused loss keeps none of these for autograd: it computes dX and dW in the forward and holds them
  (eH per token + the [V, H] weight gradient, which becomes .grad in backward);
- checkpointing keeps only each checkpointed block's input (eH) plus the rotary cos/sin and the mask;
  under naive freezing HF's enable_input_require_grads puts all L blocks in the graph, FastFreeze only L - k.
Counted are tensors the step allocates: a cached boundary (ff-warm) or precomputed input (floor) is part of
the batch, as input_ids are, so it is not an activation of the step.
Checked byte-exact against benchmarks.memtrack on CPU (benchmarks/memory/bench.py prints both;
tests/benchmarks/memory/test_bench.py and tests/estimate/test_report.py check it). `preset` is anything with
``layers, hidden, intermediate, heads, kv_heads, vocab, seq, batch, dtype`` (a
:class:`fastfreeze.estimate.shape.ModelShape` or a benchmark preset).

Gradients and optimizer state (:func:`weight_state_bytes`): one gradient per trainable parameter in
the parameters' dtype, and AdamW's two moments (torch keeps them in the parameters' dtype).

Usage:  predict(preset, "ff-warm", k=8, ckpt=False, fused=True, kernels="triton", batch=4, seq=2048)
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Dims:
    e: int  # activation bytes
    hidden: int
    inter: int
    kv: int
    heads: int
    vocab: int
    head_dim: int

    @classmethod
    def of(cls, preset) -> "Dims":
        e = 2 if preset.dtype in ("bfloat16", "float16") else 4
        d = preset.hidden // preset.heads
        return cls(e, preset.hidden, preset.intermediate, preset.kv_heads * d, preset.heads, preset.vocab, d)


def block_bytes(d: Dims, seq: int, triton: bool, first: bool) -> float:
    """Saved bytes per token of one trainable block."""
    norm = d.e * d.hidden + 4 if triton else 4 * d.hidden + d.e * d.hidden + 4
    # x needs no gradient: torch keeps only the weight-gradient operand; the Triton op keeps x (the boundary,
    # counted by the caller when the step itself computed it) and 1/rms
    first_norm = 4 if triton else d.e * d.hidden
    mlp = (3 if triton else 4) * d.e * d.inter
    attn = 4 * d.e * d.hidden + 2 * d.e * d.kv + 4 * d.heads + d.e * seq
    return (first_norm if first else norm) + norm + mlp + attn


def head_bytes(d: Dims, triton: bool, fused: bool) -> float:
    """Saved bytes per token of the final norm, LM head and loss."""
    norm = d.e * d.hidden + 4 if triton else 4 * d.hidden + d.e * d.hidden + 4
    return norm if fused else norm + d.e * d.hidden + 4 * d.vocab + 8


def predict(preset, kind: str, k: int, ckpt: bool, fused: bool, kernels: str = "torch", batch: int | None = None,
            seq: int | None = None) -> dict:
    """{"saved_bytes", "held_bytes"} for one step of `kind` on a [batch, seq] batch (default: the preset's)."""
    d = Dims.of(preset)
    b, t = batch or preset.batch, seq or preset.seq
    n = b * t
    triton = kernels == "triton" and kind.startswith("ff")
    fused = fused and triton
    layers = preset.layers
    in_graph = layers if kind == "full" else layers - k
    head = head_bytes(d, triton, fused) * n
    shared = 2 * t * d.head_dim * d.e  # cos and sin of the rotary embedding, [1, T, head_dim] each
    if ckpt:
        n_ckpt = layers if kind in ("full", "naive", "liger") else in_graph
        if kind in ("ff-warm", "floor", "floor-loop"):
            n_ckpt -= 1  # the first checkpointed input is the batch itself (cached boundary), not allocated here
        saved = head + n_ckpt * d.e * d.hidden * n
        # the checkpoint closures keep cos/sin, the boolean mask [B, 1, T, T] and cache_position alive
        held = saved + shared + b * t * t + 8 * t
    else:
        first = kind != "full"
        saved = (in_graph - 1) * block_bytes(d, t, triton, False) * n + head + shared
        saved += block_bytes(d, t, triton, first) * n if in_graph else 0
        if triton and kind == "ff":  # the first norm keeps its input: the boundary this step computed
            saved += d.e * d.hidden * n
        held = saved
    if fused:  # gradients computed in the forward and held until backward: dX [N, H] and dW [V, H]
        held += d.e * d.hidden * n + d.e * d.vocab * d.hidden
    return {"saved_bytes": saved, "held_bytes": held}


def weight_state_bytes(trainable_params: int, param_bytes: int, moments: int = 2) -> dict:
    """{"gradient_bytes", "optimizer_bytes"} of the trainable parameters (AdamW: 2 moments).

    Usage: ``weight_state_bytes(shape.trainable_params(k), 2)``"""
    return {"gradient_bytes": trainable_params * param_bytes, "optimizer_bytes": moments * trainable_params * param_bytes}
