"""FLOP model of one training step: predicted step-time ratios between freezing set-ups from the model's shapes alone.

Per token, a decoder block's forward costs 2 x its linear parameters (attention projections + MLP) plus
the causal attention core (QK^T and PV over on average T/2 keys: 2 T H); the head costs 2 H V.
Backward: a trainable block costs 2x its linear forward (dX and dW) plus 2x the attention core; a frozen
block that autograd still walks (HF's ``enable_input_require_grads``, which gradient checkpointing turns
on for input_ids models) costs 1x its linear forward (dX only) plus 2x the attention core; a block outside
the graph costs nothing. Checkpointing re-runs the forward of every checkpointed block that backward
reaches. Embedding lookups, norms, elementwise ops and the optimizer are left out (a few % of a step).
Step time is taken as proportional to FLOPs, so only ratios are predicted; checked against measured
CPU step times in tests/benchmarks/train/test_flop_model.py and tests/estimate/test_report.py.

`shape` is anything with ``layers, hidden, intermediate, heads, kv_heads, vocab, seq`` attributes
(a :class:`fastfreeze.estimate.shape.ModelShape`, or a benchmark preset).

Usage:
    from fastfreeze.estimate.flops import predicted_ratio; predicted_ratio(shape, "ff-warm", k=8, ckpt=False)
"""
from __future__ import annotations

from dataclasses import dataclass

ARMS = ("full", "naive", "liger", "ff", "ff-warm", "ff-cold", "floor", "floor-loop")


@dataclass(frozen=True)
class BlockCost:
    """Forward FLOPs per token: `linear` (projections + MLP), `attention` (causal core), `head` (LM head)."""

    linear: float
    attention: float
    head: float


def costs(preset) -> BlockCost:
    h, heads, kv = preset.hidden, preset.heads, preset.kv_heads
    head_dim = h // heads
    attn_params = 2 * h * h + 2 * h * kv * head_dim  # q, o and the (grouped) k, v projections
    mlp_params = 3 * h * preset.intermediate  # gate, up, down
    return BlockCost(linear=2.0 * (attn_params + mlp_params), attention=2.0 * preset.seq * h,
                     head=2.0 * h * preset.vocab)


@dataclass(frozen=True)
class ArmGraph:
    """How many blocks each part of a step touches: forward, trainable backward, dX-only backward, recompute."""

    forward: int
    trainable: int
    dx_only: int
    recompute: int


def arm_graph(kind: str, layers: int, k: int, ckpt: bool) -> ArmGraph:
    if kind not in ARMS:
        raise ValueError(f"unknown arm {kind!r}; choose from {ARMS}")
    if kind == "full":
        return ArmGraph(layers, layers, 0, layers if ckpt else 0)
    if kind in ("naive", "liger"):
        # Checkpointing turns on enable_input_require_grads: the k frozen blocks join the graph (dX only)
        # and, being checkpointed like every block, are recomputed in backward too.
        return ArmGraph(layers, layers - k, k if ckpt else 0, layers if ckpt else 0)
    if kind in ("ff", "ff-cold"):  # prefix runs without autograd; only trainable blocks are checkpointed
        return ArmGraph(layers, layers - k, 0, layers - k if ckpt else 0)
    return ArmGraph(layers - k, layers - k, 0, layers - k if ckpt else 0)  # ff-warm, floor, floor-loop


def step_flops(preset, kind: str, k: int, ckpt: bool) -> float:
    """FLOPs per token of one training step of this arm (head trainable in every arm)."""
    c, g = costs(preset), arm_graph(kind, preset.layers, k, ckpt)
    block = c.linear + c.attention
    return (g.forward * block + c.head  # forward
            + g.trainable * (2 * c.linear + 2 * c.attention) + 2 * c.head  # backward of trainable parts
            + g.dx_only * (c.linear + 2 * c.attention)  # frozen blocks autograd still walks
            + g.recompute * block)  # checkpointing


def predicted_ratio(preset, kind: str, k: int, ckpt: bool) -> float:
    """Predicted step time of `kind` over naive freezing at the same k and checkpointing."""
    return step_flops(preset, kind, k, ckpt) / step_flops(preset, "naive", k, ckpt)


def prefix_flops(preset, k: int) -> float:
    """Forward FLOPs per token of the frozen prefix (k blocks; the embedding lookup is free): what a cache hit saves."""
    c = costs(preset)
    return k * (c.linear + c.attention)
