"""RMSNorm (Llama and Gemma's 1+w variant, one `cast_mode` each): forward-only and training paths."""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from csrc_triton import _common

__all__ = ["rms_norm"]  # the op the package exposes (csrc_triton/__init__.py reads it)

CAST_MODES = ("llama", "gemma")  # HF's two RMSNorm cast orders (see `rms_norm`)

# Elements per program: several short rows share one program so small hidden sizes still move
# enough bytes per program to reach copy bandwidth.
_FWD_TILE = 8192
_BWD_TILE = 4096


@triton.jit
def _rms_fwd_kernel(
    X, W, Y, RSTD,
    stride_x, stride_y,
    n_rows, n_cols, eps, offset,
    STORE_RSTD: tl.constexpr, GEMMA: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
):
    rows = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    cols = tl.arange(0, BLOCK_N)
    rmask = rows < n_rows
    cmask = cols < n_cols
    mask = rmask[:, None] & cmask[None, :]
    rows64 = rows.to(tl.int64)[:, None]
    x = tl.load(X + rows64 * stride_x + cols[None, :], mask=mask, other=0.0)
    xf = x.to(tl.float32)
    rstd = tl.rsqrt(tl.sum(xf * xf, axis=1) / n_cols + eps)
    xn = xf * rstd[:, None]
    w = tl.load(W + cols, mask=cmask, other=0.0).to(tl.float32) + offset  # aot: narrow (once per program)
    if GEMMA:
        y = xn * w[None, :]  # Gemma: multiply in fp32, one cast at the end
    else:
        # Llama: cast the normalised x to the input dtype first, then multiply by the weight
        y = xn.to(X.dtype.element_ty).to(tl.float32) * w[None, :]
    tl.store(Y + rows64 * stride_y + cols[None, :], y.to(Y.dtype.element_ty), mask=mask)
    if STORE_RSTD:
        tl.store(RSTD + rows, rstd, mask=rmask)  # aot: narrow (one value per row)


@triton.jit
def _rms_bwd_kernel(
    DY, X, W, RSTD, DX, DW_PART,
    stride_dy, stride_x, stride_dx,
    n_rows, n_cols, offset,
    COMPUTE_DX: tl.constexpr, COMPUTE_DW: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
):
    # Persistent: each program walks row blocks pid, pid+nprog, ... and keeps one dW partial in
    # registers, so dW costs one [nprog, n_cols] fp32 buffer instead of one per row.
    pid = tl.program_id(0)
    nprog = tl.num_programs(0)
    cols = tl.arange(0, BLOCK_N)
    cmask = cols < n_cols
    w = tl.load(W + cols, mask=cmask, other=0.0).to(tl.float32) + offset  # aot: narrow (once per program)
    dw_acc = tl.zeros([BLOCK_N], dtype=tl.float32)
    n_blocks = tl.cdiv(n_rows, BLOCK_M)
    for blk in range(pid, n_blocks, nprog):
        rows = blk * BLOCK_M + tl.arange(0, BLOCK_M)
        rmask = rows < n_rows
        mask = rmask[:, None] & cmask[None, :]
        rows64 = rows.to(tl.int64)[:, None]
        x = tl.load(X + rows64 * stride_x + cols[None, :], mask=mask, other=0.0).to(tl.float32)
        dy = tl.load(DY + rows64 * stride_dy + cols[None, :], mask=mask, other=0.0).to(tl.float32)
        rstd = tl.load(RSTD + rows, mask=rmask, other=0.0)  # aot: narrow (one value per row)
        xn = x * rstd[:, None]
        if COMPUTE_DX:
            g = dy * w[None, :]
            c = tl.sum(g * xn, axis=1) / n_cols
            dx = (g - xn * c[:, None]) * rstd[:, None]
            tl.store(DX + rows64 * stride_dx + cols[None, :], dx.to(DX.dtype.element_ty), mask=mask)
        if COMPUTE_DW:
            dw_acc += tl.sum(dy * xn, axis=0)
    if COMPUTE_DW:
        tl.store(DW_PART + pid * n_cols + cols, dw_acc, mask=cmask)  # aot: narrow (once per program)


def _blocks(n_rows: int, n_cols: int, tile: int) -> tuple[int, int]:
    block_n = _common.next_pow2(n_cols)
    if block_n > 65536:
        raise ValueError(f"rms_norm supports hidden sizes up to 65536, got {n_cols}; use the torch path")
    block_m = max(1, min(_common.next_pow2(n_rows), tile // block_n))
    return block_m, block_n


def _check(x: torch.Tensor, weight: torch.Tensor, cast_mode: str) -> None:
    if cast_mode not in CAST_MODES:
        raise ValueError(f"cast_mode must be one of {CAST_MODES} (the family's RMSNorm cast order), got {cast_mode!r}")
    _common.check_float("x", x)
    _common.check_device("x", x)
    _common.check_float("weight", weight)
    if weight.dim() != 1 or weight.shape[0] != x.shape[-1]:
        raise ValueError(f"weight must be 1-D of size x.shape[-1]={x.shape[-1]}, got {tuple(weight.shape)}")
    if x.device != weight.device:
        raise ValueError(f"x is on {x.device} but weight on {weight.device}; move them to one device")


def _forward(x, weight, eps, gemma, store_rstd):
    """Launch the forward kernel; returns (y2d, rstd or None, x2d), all [rows, H]."""
    n_cols = x.shape[-1]
    x2 = _common.as_rows(x, n_cols)
    n_rows = x2.shape[0]
    # Llama's `weight * x.to(input_dtype)` promotes (fp32 weight + bf16 x -> fp32); Gemma casts to x's dtype.
    out_dtype = x.dtype if gemma else torch.promote_types(x.dtype, weight.dtype)
    y = _common.alloc((n_rows, n_cols), out_dtype, x.device, "rms_norm.y")
    rstd = _common.alloc((n_rows,), torch.float32, x.device, "rms_norm.rstd") if store_rstd else y
    block_m, block_n = _blocks(n_rows, n_cols, _FWD_TILE)
    grid = (triton.cdiv(n_rows, block_m),)
    if n_rows == 0:
        return y, (rstd if store_rstd else None), x2
    _common.launch(
        _rms_fwd_kernel, grid,
        x2, weight, y, rstd,
        x2.stride(0), y.stride(0),
        n_rows, n_cols, float(eps), _offset(gemma),
        STORE_RSTD=store_rstd, GEMMA=gemma,
        # 32 bytes per thread per tensor (16 bf16 / 8 fp32), up to 32 warps: fp32 at BLOCK_N=8192 spilled on
        # sm_80 with the former 16-warp cap (benchmarks/aot/check.py); bf16 launches are unchanged.
        BLOCK_M=block_m, BLOCK_N=block_n, num_warps=_common.row_warps(block_m * block_n, 1024 // x2.element_size(), 32),
    )
    return y, (rstd if store_rstd else None), x2


def _backward(dy, x2, weight, rstd, gemma, need_dx, need_dw):
    """Launch the backward kernel; returns (dx2d or None, dw or None). dW only when need_dw."""
    n_rows, n_cols = x2.shape
    dy2 = _common.as_rows(dy, n_cols)
    dx = _common.alloc((n_rows, n_cols), x2.dtype, x2.device, "rms_norm.dx") if need_dx else dy2
    if n_rows == 0:
        return (dx if need_dx else None), (torch.zeros_like(weight) if need_dw else None)
    block_m, block_n = _blocks(n_rows, n_cols, _BWD_TILE)
    nprog = _common.persistent_programs(x2.device, triton.cdiv(n_rows, block_m))
    dw_part = (
        _common.alloc((nprog, n_cols), torch.float32, x2.device, "rms_norm.dw_partial") if need_dw else dy2
    )
    _common.launch(
        _rms_bwd_kernel, (nprog,),
        dy2, x2, weight, rstd, dx, dw_part,
        dy2.stride(0), x2.stride(0), dx.stride(0),
        n_rows, n_cols, _offset(gemma),
        COMPUTE_DX=need_dx, COMPUTE_DW=need_dw,
        # One 16-byte vector per thread per tensor (8 bf16 / 4 fp32 elements), up to 32 warps. The AOT check
        # (benchmarks/aot/check.py) found the former 512 elements per warp, <= 16 warps, spilling at BLOCK_N=8192
        # (odd hidden) and on sm_80 at fp32 hidden 896, and 106 registers (occupancy 0.25) at bf16 4096.
        BLOCK_M=block_m, BLOCK_N=block_n, num_warps=_common.row_warps(block_m * block_n, 512 // x2.element_size(), 32),
    )
    dw = dw_part.sum(0).to(weight.dtype) if need_dw else None
    return (dx if need_dx else None), dw


def _offset(gemma: bool) -> float:
    # Gemma scales by (1 + w): the kernels add the offset to the loaded weight. It follows from the cast
    # mode (one fact), never passed on its own.
    return 1.0 if gemma else 0.0


class RMSNormFunction(torch.autograd.Function):
    """y = rms_norm(x) * (weight [+ 1 for Gemma]); backward computes dX / dW only for inputs that need them."""

    @staticmethod
    def forward(ctx, x, weight, eps, gemma):
        y, rstd, x2 = _forward(x, weight, eps, gemma, store_rstd=True)
        ctx.save_for_backward(x2, weight, rstd)
        ctx.gemma = gemma
        return y.view(*x.shape[:-1], y.shape[-1])

    @staticmethod
    def backward(ctx, dy):
        x2, weight, rstd = ctx.saved_tensors
        need_dx, need_dw = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        dx, dw = _backward(dy, x2, weight, rstd, ctx.gemma, need_dx, need_dw)
        if dx is not None:
            dx = dx.view(dy.shape)
        return dx, dw, None, None


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float = 1e-6, cast_mode: str = "llama") -> torch.Tensor:
    """RMSNorm over the last dim, computed in fp32; differentiable, forward-only when nothing needs grad.

    Usage: ``y = rms_norm(hidden, layer.weight, layer.variance_epsilon)``  (Gemma: ``cast_mode="gemma"``).

    `cast_mode` is the family's whole RMSNorm fact (fastfreeze passes `FamilySpec.rms_norm` as is):
    ``"llama"`` returns ``weight * normed.to(x.dtype)`` in the promoted dtype of x and weight;
    ``"gemma"`` returns ``(normed * (1 + weight.float())).to(x.dtype)``.
    """
    _check(x, weight, cast_mode)
    gemma = cast_mode == "gemma"
    if torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad):
        return RMSNormFunction.apply(x, weight, eps, gemma)
    y, _, _ = _forward(x, weight, eps, gemma, store_rstd=False)
    return y.view(*x.shape[:-1], y.shape[-1])
