"""Rotary position embedding on q and k (HF rotate-half convention, partial rotary): forward and backward."""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from csrc_triton import _common

__all__ = ["apply_rope"]  # the op the package exposes (csrc_triton/__init__.py reads it)


@triton.jit
def _rope_kernel(
    X, Y, COS, SIN,
    sxb, sxh, sxt, syb, syh, syt, scb, sct, ssb, sst,
    n_heads, seq_len, head_dim, half,
    BACKWARD: tl.constexpr, BLOCK_H: tl.constexpr, BLOCK_HALF: tl.constexpr, BLOCK_P: tl.constexpr,
):
    # One program per (batch, position): cos/sin for that position are loaded once and reused
    # for every head.
    pid = tl.program_id(0)
    b = (pid // seq_len).to(tl.int64)
    t = (pid % seq_len).to(tl.int64)
    d = tl.arange(0, BLOCK_HALF)
    dmask = d < half
    # One cos/sin row per program, reused by every head: with few heads (k under GQA) the compiler may
    # spread it one element per thread; that is 4 * half elements against n_heads * head_dim of q/k.
    crow = COS + b * scb + t * sct
    srow = SIN + b * ssb + t * sst
    c1 = tl.load(crow + d, mask=dmask, other=0.0).to(tl.float32)  # aot: narrow
    c2 = tl.load(crow + half + d, mask=dmask, other=0.0).to(tl.float32)  # aot: narrow
    s1 = tl.load(srow + d, mask=dmask, other=0.0).to(tl.float32)  # aot: narrow
    s2 = tl.load(srow + half + d, mask=dmask, other=0.0).to(tl.float32)  # aot: narrow
    for h0 in range(0, n_heads, BLOCK_H):
        h = (h0 + tl.arange(0, BLOCK_H)).to(tl.int64)
        hmask = (h < n_heads)[:, None]
        xrow = X + b * sxb + t * sxt + h[:, None] * sxh
        yrow = Y + b * syb + t * syt + h[:, None] * syh
        m = hmask & dmask[None, :]
        x1 = tl.load(xrow + d[None, :], mask=m, other=0.0).to(tl.float32)
        x2 = tl.load(xrow + half + d[None, :], mask=m, other=0.0).to(tl.float32)
        if BACKWARD:
            # transpose of the forward rotation: [[c1, -s1], [s2, c2]]^T
            y1 = x1 * c1[None, :] + x2 * s2[None, :]
            y2 = x2 * c2[None, :] - x1 * s1[None, :]
        else:
            # q*cos + rotate_half(q)*sin with rotate_half(q) = [-q2, q1]
            y1 = x1 * c1[None, :] - x2 * s1[None, :]
            y2 = x2 * c2[None, :] + x1 * s2[None, :]
        tl.store(yrow + d[None, :], y1.to(Y.dtype.element_ty), mask=m)
        tl.store(yrow + half + d[None, :], y2.to(Y.dtype.element_ty), mask=m)
        if BLOCK_P > 0:  # partial rotary: dims past rotary_dim pass through unchanged
            p = tl.arange(0, BLOCK_P)
            mp = hmask & (p < head_dim - 2 * half)[None, :]
            xp = tl.load(xrow + 2 * half + p[None, :], mask=mp, other=0.0)
            tl.store(yrow + 2 * half + p[None, :], xp.to(Y.dtype.element_ty), mask=mp)


def _launch(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, rotary_dim: int, backward: bool, tag: str):
    if x.stride(-1) != 1:
        x = x.contiguous()
    bsz, n_heads, seq_len, head_dim = x.shape
    y = _common.alloc(x.shape, x.dtype, x.device, tag)
    if x.numel() == 0:
        return y
    half = rotary_dim // 2
    block_half = _common.next_pow2(half)
    n_pass = head_dim - rotary_dim
    block_p = _common.next_pow2(n_pass) if n_pass else 0
    block_h = max(1, min(_common.next_pow2(n_heads), 2048 // block_half))
    _common.launch(
        _rope_kernel, (bsz * seq_len,),
        x, y, cos, sin,
        x.stride(0), x.stride(1), x.stride(2), y.stride(0), y.stride(1), y.stride(2),
        cos.stride(0), cos.stride(1), sin.stride(0), sin.stride(1),
        n_heads, seq_len, head_dim, half,
        BACKWARD=backward, BLOCK_H=block_h, BLOCK_HALF=block_half, BLOCK_P=block_p,
        num_warps=_common.row_warps(block_h * (2 * block_half + block_p)),
    )
    return y


class RoPEFunction(torch.autograd.Function):
    """Rotates q and k; the backward applies the transposed rotation (rope with -sin when halves repeat)."""

    @staticmethod
    def forward(ctx, q, k, cos, sin, rotary_dim):
        ctx.save_for_backward(cos, sin)
        ctx.set_materialize_grads(False)  # q or k unused downstream: skip its backward launch
        ctx.rotary_dim = rotary_dim
        return _launch(q, cos, sin, rotary_dim, False, "rope.q"), _launch(k, cos, sin, rotary_dim, False, "rope.k")

    @staticmethod
    def backward(ctx, dq, dk):
        cos, sin = ctx.saved_tensors
        r = ctx.rotary_dim
        dq_in = _launch(dq, cos, sin, r, True, "rope.dq") if dq is not None and ctx.needs_input_grad[0] else None
        dk_in = _launch(dk, cos, sin, r, True, "rope.dk") if dk is not None and ctx.needs_input_grad[1] else None
        return dq_in, dk_in, None, None, None


def _prep_cos_sin(t: torch.Tensor, name: str, bsz: int, seq_len: int, rotary_dim: int, dtype_ref) -> torch.Tensor:
    if t.dim() == 2:  # [T, R]: one table for every batch element
        t = t.unsqueeze(0)
    if t.dim() != 3 or t.shape[1] != seq_len or t.shape[2] != rotary_dim or t.shape[0] not in (1, bsz):
        raise ValueError(
            f"{name} must be [B or 1, T={seq_len}, rotary_dim={rotary_dim}] (HF rotary_emb output), "
            f"got {tuple(t.shape)}"
        )
    if t.requires_grad and torch.is_grad_enabled():
        raise ValueError(f"apply_rope does not differentiate through {name}; pass {name}.detach()")
    if t.device != dtype_ref.device:
        raise ValueError(f"{name} is on {t.device} but q on {dtype_ref.device}; move it to q's device")
    if t.stride(-1) != 1:
        t = t.contiguous()
    return t.expand(bsz, seq_len, rotary_dim)  # batch stride 0 when shared


def apply_rope(q: torch.Tensor, k: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
               rotary_dim: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """HF ``apply_rotary_pos_emb(q, k, cos, sin, unsqueeze_dim=1)``, fused; outputs in q's / k's dtype.

    Usage: ``q, k = apply_rope(q, k, cos, sin)`` with q/k [B, heads, T, head_dim] and cos/sin
    [B or 1, T, rotary_dim] as the model's rotary_emb returns them. When rotary_dim < head_dim
    (GPT-NeoX, Phi) the first rotary_dim dims rotate and the rest pass through, as those models do.
    Math in fp32, one rounding per output (HF rounds after each product in the activation dtype).
    """
    if q.dim() != 4 or k.dim() != 4:
        raise ValueError(f"q and k must be [B, heads, T, head_dim], got {tuple(q.shape)} and {tuple(k.shape)}")
    _common.check_float("q", q)
    _common.check_device("q", q)
    _common.check_float("k", k)
    bsz, _, seq_len, head_dim = q.shape
    if k.shape[0] != bsz or k.shape[2] != seq_len or k.shape[3] != head_dim:
        raise ValueError(f"k {tuple(k.shape)} must share B, T and head_dim with q {tuple(q.shape)}")
    rotary_dim = cos.shape[-1] if rotary_dim is None else int(rotary_dim)
    if rotary_dim % 2 or not 0 < rotary_dim <= head_dim:
        raise ValueError(f"rotary_dim must be even and in (0, head_dim={head_dim}], got {rotary_dim}")
    cos = _prep_cos_sin(cos, "cos", bsz, seq_len, rotary_dim, q)
    sin = _prep_cos_sin(sin, "sin", bsz, seq_len, rotary_dim, q)
    if torch.is_grad_enabled() and (q.requires_grad or k.requires_grad):
        return RoPEFunction.apply(q, k, cos, sin, rotary_dim)
    return _launch(q, cos, sin, rotary_dim, False, "rope.q"), _launch(k, cos, sin, rotary_dim, False, "rope.k")
