"""SwiGLU activation ``silu(gate) * up``: forward-only and training paths, fp32 math, one rounding."""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from csrc_triton import _common

__all__ = ["swiglu"]  # the op the package exposes (csrc_triton/__init__.py reads it)

_TILE = 4096  # elements per program; rows are split into column blocks for large intermediate sizes


@triton.jit
def _swiglu_fwd_kernel(G, U, Y, stride_g, stride_u, stride_y, n_rows, n_cols,
                       BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
    rows = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    cols = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
    mask = (rows < n_rows)[:, None] & (cols < n_cols)[None, :]
    rows64 = rows.to(tl.int64)[:, None]
    g = tl.load(G + rows64 * stride_g + cols[None, :], mask=mask, other=0.0).to(tl.float32)
    u = tl.load(U + rows64 * stride_u + cols[None, :], mask=mask, other=0.0).to(tl.float32)
    y = g * tl.sigmoid(g) * u
    tl.store(Y + rows64 * stride_y + cols[None, :], y.to(Y.dtype.element_ty), mask=mask)


@triton.jit
def _swiglu_bwd_kernel(DY, G, U, DG, DU, stride_dy, stride_g, stride_u, stride_dg, stride_du, n_rows, n_cols,
                       COMPUTE_DG: tl.constexpr, COMPUTE_DU: tl.constexpr,
                       BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
    # Recomputes silu from the saved inputs instead of saving the activation: no extra memory.
    rows = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    cols = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
    mask = (rows < n_rows)[:, None] & (cols < n_cols)[None, :]
    rows64 = rows.to(tl.int64)[:, None]
    dy = tl.load(DY + rows64 * stride_dy + cols[None, :], mask=mask, other=0.0).to(tl.float32)
    g = tl.load(G + rows64 * stride_g + cols[None, :], mask=mask, other=0.0).to(tl.float32)
    sig = tl.sigmoid(g)
    if COMPUTE_DU:
        tl.store(DU + rows64 * stride_du + cols[None, :], (dy * g * sig).to(DU.dtype.element_ty), mask=mask)
    if COMPUTE_DG:
        u = tl.load(U + rows64 * stride_u + cols[None, :], mask=mask, other=0.0).to(tl.float32)
        # d silu(g)/dg = sig * (1 + g * (1 - sig))
        dg = dy * u * sig * (1.0 + g * (1.0 - sig))
        tl.store(DG + rows64 * stride_dg + cols[None, :], dg.to(DG.dtype.element_ty), mask=mask)


def _grid(n_rows: int, n_cols: int):
    block_n = min(_common.next_pow2(n_cols), _TILE)
    block_m = max(1, min(_common.next_pow2(n_rows), _TILE // block_n))
    return block_m, block_n, (triton.cdiv(n_rows, block_m), triton.cdiv(n_cols, block_n))


def _forward(gate: torch.Tensor, up: torch.Tensor) -> torch.Tensor:
    n_cols = gate.shape[-1]
    g2, u2 = _common.as_rows(gate, n_cols), _common.as_rows(up, n_cols)
    n_rows = g2.shape[0]
    y = _common.alloc((n_rows, n_cols), gate.dtype, gate.device, "swiglu.y")
    if n_rows:
        block_m, block_n, grid = _grid(n_rows, n_cols)
        _common.launch(_swiglu_fwd_kernel, grid, g2, u2, y, g2.stride(0), u2.stride(0), y.stride(0), n_rows, n_cols,
                       BLOCK_M=block_m, BLOCK_N=block_n, num_warps=_common.row_warps(block_m * block_n))
    return y.view(gate.shape)


def _backward(dy: torch.Tensor, gate: torch.Tensor, up: torch.Tensor, need_dg: bool, need_du: bool):
    """Launch the backward kernel; returns (d_gate or None, d_up or None) shaped like gate / up."""
    n_cols = gate.shape[-1]
    g2, u2, dy2 = (_common.as_rows(t, n_cols) for t in (gate, up, dy))
    n_rows = g2.shape[0]
    dg = _common.alloc((n_rows, n_cols), gate.dtype, gate.device, "swiglu.dgate") if need_dg else dy2
    du = _common.alloc((n_rows, n_cols), up.dtype, up.device, "swiglu.dup") if need_du else dy2
    if n_rows:
        block_m, block_n, grid = _grid(n_rows, n_cols)
        _common.launch(_swiglu_bwd_kernel, grid, dy2, g2, u2, dg, du, dy2.stride(0), g2.stride(0), u2.stride(0),
                       dg.stride(0), du.stride(0), n_rows, n_cols,
                       COMPUTE_DG=need_dg, COMPUTE_DU=need_du, BLOCK_M=block_m, BLOCK_N=block_n,
                       num_warps=_common.row_warps(block_m * block_n))
    return (dg.view(gate.shape) if need_dg else None), (du.view(up.shape) if need_du else None)


class SwiGLUFunction(torch.autograd.Function):
    """silu(gate) * up; backward writes d_gate / d_up only for the inputs that need them."""

    @staticmethod
    def forward(ctx, gate, up):
        ctx.save_for_backward(gate, up)
        return _forward(gate, up)

    @staticmethod
    def backward(ctx, dy):
        gate, up = ctx.saved_tensors
        need_dg, need_du = ctx.needs_input_grad
        return _backward(dy, gate, up, need_dg, need_du)


def swiglu(gate: torch.Tensor, up: torch.Tensor | None = None) -> torch.Tensor:
    """``silu(gate) * up`` computed in fp32 and rounded once to gate's dtype; differentiable.

    Usage: ``h = swiglu(mlp.gate_proj(x), mlp.up_proj(x))``; or ``swiglu(gate_up)`` with one
    concatenated ``[..., 2*I]`` tensor laid out [gate | up] (Phi-3's gate_up_proj).
    """
    if up is None:
        if gate.shape[-1] % 2:
            raise ValueError(f"a concatenated gate_up tensor needs an even last dim, got {gate.shape[-1]}")
        gate, up = gate.chunk(2, dim=-1)
    _common.check_float("gate", gate)
    _common.check_device("gate", gate)
    if gate.shape != up.shape or gate.dtype != up.dtype or gate.device != up.device:
        raise ValueError(
            f"gate and up must share shape, dtype and device: {tuple(gate.shape)}/{gate.dtype}/{gate.device} vs "
            f"{tuple(up.shape)}/{up.dtype}/{up.device}"
        )
    if torch.is_grad_enabled() and (gate.requires_grad or up.requires_grad):
        return SwiGLUFunction.apply(gate, up)
    return _forward(gate, up)
