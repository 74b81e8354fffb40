"""Fused LM head + cross-entropy, chunked over tokens so the [tokens x vocab] logits never exist in full."""
from __future__ import annotations

from dataclasses import dataclass

import torch
import triton
import triton.language as tl

from csrc_triton import _common

__all__ = ["linear_cross_entropy"]  # the op the package exposes (csrc_triton/__init__.py reads it)

MAX_BLOCK_V = 4096  # vocab elements per loop step of the CE kernel (tests lower it to exercise the loop)
CHUNK_ELEMS = 1 << 28  # default chunk: tokens * vocab <= 2**28 logits (512 MiB in bf16)


@triton.jit
def _softcap(z, cap):
    # cap * tanh(z / cap), with tanh written via sigmoid (numerically safe, no libdevice needed)
    return cap * (2.0 * tl.sigmoid(2.0 * z / cap) - 1.0)


@triton.jit
def _ce_rows_kernel(
    LOGITS, LABELS, LOSS, SCALE, stride_l, n_vocab, ignore_index, softcap,
    HAS_SOFTCAP: tl.constexpr, COMPUTE_GRAD: tl.constexpr, BLOCK_V: tl.constexpr,
):
    # One program per token. Pass 1: online logsumexp over vocab blocks. Pass 2 (training only):
    # overwrite the logits row with d(loss)/d(logits) = (softmax - onehot) * scale, so the caller's
    # GEMMs turn it into dX and dW and backward only has to multiply by grad_output.
    row = tl.program_id(0).to(tl.int64)
    ptr = LOGITS + row * stride_l
    label = tl.load(LABELS + row).to(tl.int64)
    valid = label != ignore_index
    m = -float("inf")
    s = 0.0
    for v0 in range(0, n_vocab, BLOCK_V):
        cols = v0 + tl.arange(0, BLOCK_V)
        mask = cols < n_vocab
        z = tl.load(ptr + cols, mask=mask, other=0.0).to(tl.float32)
        if HAS_SOFTCAP:
            z = _softcap(z, softcap)
        z = tl.where(mask, z, -float("inf"))
        m_new = tl.maximum(m, tl.max(z, axis=0))
        s = s * tl.exp(m - m_new) + tl.sum(tl.exp(z - m_new), axis=0)
        m = m_new
    lse = m + tl.log(s)
    safe_label = tl.where(valid, label, 0)
    zt = tl.load(ptr + safe_label).to(tl.float32)
    if HAS_SOFTCAP:
        zt = _softcap(zt, softcap)
    tl.store(LOSS + row, tl.where(valid, lse - zt, 0.0))
    if COMPUTE_GRAD:
        scale = tl.where(valid, tl.load(SCALE), 0.0)  # ignored tokens: zero gradient row
        inv_s = 1.0 / s  # softmax as exp(z - m) / s, as torch does: exp(z - lse) loses ~2 ulps to lse's rounding
        for v0 in range(0, n_vocab, BLOCK_V):
            cols = v0 + tl.arange(0, BLOCK_V)
            mask = cols < n_vocab
            z = tl.load(ptr + cols, mask=mask, other=0.0).to(tl.float32)
            if HAS_SOFTCAP:
                t = 2.0 * tl.sigmoid(2.0 * z / softcap) - 1.0
                g = tl.exp(softcap * t - m) * inv_s - tl.where(cols == label, 1.0, 0.0)
                g = g * (1.0 - t * t)  # d(cap*tanh(z/cap))/dz
            else:
                g = tl.exp(z - m) * inv_s - tl.where(cols == label, 1.0, 0.0)
            tl.store(ptr + cols, (g * scale).to(LOGITS.dtype.element_ty), mask=mask)


def _chunk_size(n_tokens: int, n_vocab: int, chunk_size: int | None) -> int:
    if chunk_size is None:
        chunk_size = max(256, (CHUNK_ELEMS // n_vocab) // 256 * 256)
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    return max(1, min(int(chunk_size), n_tokens))


@dataclass(frozen=True)
class RunOptions:
    """How the chunked pass runs: the loss's options and which gradients it computes (none: forward only).

    Usage: ``_run(h, w, None, labels, None, RunOptions(ignore_index=-100))``
    """

    ignore_index: int = -100
    softcap: float | None = None
    chunk_size: int | None = None
    need_dx: bool = False
    need_dw: bool = False
    need_db: bool = False

    @property
    def compute_grad(self) -> bool:
        return self.need_dx or self.need_dw or self.need_db


def _run(hidden, weight, bias, labels, scale, opts: RunOptions):
    """All chunks: per-token loss [N] (fp32) and, when training, dX / dW / dbias for grad_output = 1."""
    n_tokens, _ = hidden.shape
    n_vocab = weight.shape[0]
    dev = hidden.device
    softcap = opts.softcap
    loss_rows = _common.alloc((n_tokens,), torch.float32, dev, "lce.loss_rows")
    dx = _common.alloc(hidden.shape, hidden.dtype, dev, "lce.dx") if opts.need_dx else None
    dw = _common.alloc(weight.shape, weight.dtype, dev, "lce.dw") if opts.need_dw else None
    db = torch.zeros(n_vocab, dtype=torch.float32, device=dev) if opts.need_db else None
    if n_tokens == 0:
        if dw is not None:
            dw.zero_()
        return loss_rows, dx, dw, db
    chunk = _chunk_size(n_tokens, n_vocab, opts.chunk_size)
    buf = _common.alloc((chunk, n_vocab), hidden.dtype, dev, "lce.logits_chunk")
    block_v = min(_common.next_pow2(n_vocab), MAX_BLOCK_V)
    scale_t = scale if scale is not None else loss_rows  # unused pointer when not training
    for start in range(0, n_tokens, chunk):
        end = min(start + chunk, n_tokens)
        h = hidden[start:end]
        logits = buf[: end - start]
        # cuBLAS accumulates in fp32 and rounds to the activation dtype, exactly like HF's lm_head.
        if bias is not None:
            torch.addmm(bias, h, weight.t(), out=logits)
        else:
            torch.mm(h, weight.t(), out=logits)
        _common.launch(
            _ce_rows_kernel, (end - start,),
            logits, labels[start:end], loss_rows[start:end], scale_t, logits.stride(0), n_vocab,
            int(opts.ignore_index), float(softcap or 0.0),
            HAS_SOFTCAP=softcap is not None, COMPUTE_GRAD=opts.compute_grad, BLOCK_V=block_v,
            num_warps=_common.row_warps(block_v),
        )
        if dx is not None:
            torch.mm(logits, weight, out=dx[start:end])
        if dw is not None:
            # dW accumulates in the weight's dtype (no fp32 [V, H] copy: that alone would cost
            # more than the memory this op saves); one rounding per chunk, chunks are few.
            if start == 0:
                torch.mm(logits.t(), h, out=dw)
            else:
                dw.addmm_(logits.t(), h)
        if db is not None:
            db.add_(logits.sum(0, dtype=torch.float32))
    return loss_rows, dx, dw, db


def _reduce(loss_rows, labels, ignore_index, reduction, num_items_in_batch):
    """HF ForCausalLMLoss reduction: sum / num_items_in_batch, else mean over non-ignored tokens."""
    if reduction == "none":
        return loss_rows, None
    total = loss_rows.sum()
    if reduction == "sum":
        return total, torch.ones((), dtype=torch.float32, device=loss_rows.device)
    if num_items_in_batch is not None:
        denom = torch.as_tensor(num_items_in_batch, device=loss_rows.device).to(torch.float32)
    else:
        denom = (labels != ignore_index).sum().to(torch.float32)  # 0 valid tokens -> nan, as torch
    return total / denom, 1.0 / denom


class LinearCrossEntropyFunction(torch.autograd.Function):
    """Loss and all needed gradients in the forward (chunked); backward scales them by grad_output."""

    @staticmethod
    def forward(ctx, hidden, weight, labels, bias, ignore_index, softcap, reduction, num_items_in_batch, chunk_size):
        opts = RunOptions(ignore_index, softcap, chunk_size, need_dx=ctx.needs_input_grad[0],
                          need_dw=ctx.needs_input_grad[1], need_db=bias is not None and ctx.needs_input_grad[3])
        # The scale must be known before the chunks run: the denominator depends only on labels.
        _, scale = _reduce(torch.zeros(0, device=hidden.device), labels, ignore_index, reduction, num_items_in_batch)
        loss_rows, dx, dw, db = _run(hidden, weight, bias, labels, scale, opts)
        loss, _ = _reduce(loss_rows, labels, ignore_index, reduction, num_items_in_batch)
        ctx.grads = (dx, dw, db)
        ctx.bias_dtype = bias.dtype if bias is not None else None
        return loss

    @staticmethod
    def backward(ctx, grad_loss):
        if ctx.grads is None:
            raise RuntimeError("linear_cross_entropy backward ran twice; its gradients are computed once in the "
                               "forward and scaled in place. Recompute the loss instead of retain_graph=True.")
        dx, dw, db = ctx.grads
        ctx.grads = None  # free them with the graph step, and guard the in-place scaling below
        g = grad_loss.to(torch.float32)
        if dx is not None:
            dx.mul_(g)
        if dw is not None:
            dw.mul_(g)
        if db is not None:
            db = (db * g).to(ctx.bias_dtype)
        return dx, dw, None, db, None, None, None, None, None


def linear_cross_entropy(hidden: torch.Tensor, weight: torch.Tensor, labels: torch.Tensor, ignore_index: int = -100,
                         bias: torch.Tensor | None = None, reduction: str = "mean", num_items_in_batch=None,
                         softcap: float | None = None, chunk_size: int | None = None) -> torch.Tensor:
    """Cross-entropy of ``hidden @ weight.T (+ bias)`` against labels without materialising all logits.

    Usage: ``loss = linear_cross_entropy(h[:, :-1].reshape(-1, H), model.lm_head.weight, labels[:, 1:].reshape(-1))``

    hidden [N, H] (callers shift and flatten), weight [V, H], labels [N] with ``ignore_index`` for
    skipped tokens. ``reduction="mean"`` equals HF's ForCausalLMLoss: sum over non-ignored tokens
    divided by ``num_items_in_batch`` when given (gradient accumulation), else by the count of
    non-ignored tokens. ``softcap`` applies ``softcap * tanh(logits / softcap)`` (Gemma 2).
    Gradients: dX only if hidden requires grad, dW/dbias only if the head is trainable; dW is
    accumulated in weight's dtype across chunks. The loss is fp32. ``reduction="none"`` returns
    per-token losses and is forward-only. ``chunk_size`` tokens per step (default: 2**28 // V).
    """
    if reduction not in ("mean", "sum", "none"):
        raise ValueError(f"reduction must be 'mean', 'sum' or 'none', got {reduction!r}")
    if hidden.dim() != 2 or weight.dim() != 2 or hidden.shape[1] != weight.shape[1]:
        raise ValueError(f"expected hidden [N, H] and weight [V, H]; got {tuple(hidden.shape)} and "
                         f"{tuple(weight.shape)} (flatten and shift hidden states first)")
    if labels.shape != hidden.shape[:1] or labels.dtype not in (torch.int64, torch.int32):
        raise ValueError(f"labels must be int64 of shape [{hidden.shape[0]}], got {labels.dtype} {tuple(labels.shape)}")
    if bias is not None and bias.shape != weight.shape[:1]:
        raise ValueError(f"bias must be [{weight.shape[0]}], got {tuple(bias.shape)}")
    if softcap is not None and not softcap > 0:
        raise ValueError(f"softcap must be positive or None, got {softcap}")
    dev = hidden.device
    for name, t in (("weight", weight), ("labels", labels), ("bias", bias)):
        if t is not None and t.device != dev:
            raise ValueError(f"{name} is on {t.device} but hidden on {dev}; move it to one device")
    if torch.is_autocast_enabled(dev.type):
        # What nn.Linear would do under autocast; the fused op itself then runs with autocast off.
        dt = torch.get_autocast_dtype(dev.type)
        hidden, weight = hidden.to(dt), weight.to(dt)
        bias = bias.to(dt) if bias is not None else None
    _common.check_float("hidden", hidden)
    _common.check_device("hidden", hidden)
    if weight.dtype != hidden.dtype or (bias is not None and bias.dtype != hidden.dtype):
        raise ValueError(f"hidden ({hidden.dtype}), weight ({weight.dtype}) and bias must share a dtype; "
                         "cast them (or run under torch.autocast)")
    n_vocab = weight.shape[0]
    bad = ((labels < 0) & (labels != ignore_index)) | (labels >= n_vocab)
    if bool(bad.any()):
        raise ValueError(f"labels must be in [0, {n_vocab}) or equal ignore_index={ignore_index}")
    labels = labels.contiguous()
    if hidden.stride(-1) != 1:
        hidden = hidden.contiguous()
    needs_grad = torch.is_grad_enabled() and (
        hidden.requires_grad or weight.requires_grad or (bias is not None and bias.requires_grad))
    with torch.autocast(dev.type, enabled=False):
        if needs_grad:
            if reduction == "none":
                raise ValueError("reduction='none' is forward-only here; train with 'mean' or 'sum' "
                                 "(or wrap the call in torch.no_grad())")
            return LinearCrossEntropyFunction.apply(hidden, weight, labels, bias, ignore_index, softcap, reduction,
                                                    num_items_in_batch, chunk_size)
        loss_rows, _, _, _ = _run(hidden, weight, bias, labels, None, RunOptions(ignore_index, softcap, chunk_size))
        return _reduce(loss_rows, labels, ignore_index, reduction, num_items_in_batch)[0]
