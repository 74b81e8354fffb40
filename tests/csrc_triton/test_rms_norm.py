"""RMSNorm kernels (Llama / Gemma cast orders) vs float64 and HF's torch code."""
from __future__ import annotations

import pytest
import torch

import csrc_triton
from csrc_triton.rms_norm import rms_norm as rms_norm_fn  # same object as csrc_triton.rms_norm

DTYPES = [torch.float32, torch.bfloat16, torch.float16]
EPS = 1e-6


def hf_llama(x, w, eps=EPS):
    """transformers' LlamaRMSNorm.forward."""
    dt = x.dtype
    h = x.to(torch.float32) if dt != torch.float64 else x
    h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + eps)
    return w * h.to(dt)


def hf_gemma(x, w, eps=EPS):
    """transformers' Gemma2RMSNorm.forward."""
    h = x.float() if x.dtype != torch.float64 else x
    h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + eps)
    wf = w.float() if w.dtype != torch.float64 else w
    return (h * (1.0 + wf)).type_as(x)


def _leaf(t, grad=True):
    return t.detach().clone().requires_grad_(grad)


def _run_both(fn_kernel, fn_torch, inputs, grad_mask, dy):
    """Kernel and torch in the input dtype, plus torch in float64; returns (outs, grads) of each."""
    results = []
    for fn, cast in ((fn_kernel, None), (fn_torch, None), (fn_torch, torch.float64)):
        leaves = [_leaf(t.to(cast) if cast else t, g) for t, g in zip(inputs, grad_mask)]
        out = fn(*leaves)
        out.backward(dy.to(out.dtype).clone())  # fresh grad tensor each backward
        results.append((out.detach(), [leaf.grad for leaf in leaves]))
    return results


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(1, 96), (67, 130), (2, 3, 257)])
@pytest.mark.parametrize("mode", ["llama", "gemma"])
def test_rms_norm_forward_backward(dtype, shape, mode, dev, check, nan_buffers):
    x = torch.randn(shape, device=dev, dtype=dtype) * 3
    w = (torch.randn(shape[-1], device=dev) * (0.1 if mode == "gemma" else 1.0)).to(dtype)
    ref_fn = hf_gemma if mode == "gemma" else hf_llama
    dy = torch.randn(shape, device=dev)
    (yk, (dxk, dwk)), (yt, (dxt, dwt)), (yr, (dxr, dwr)) = _run_both(
        lambda a, b: csrc_triton.rms_norm(a, b, EPS, cast_mode=mode), ref_fn, [x, w], [True, True], dy)
    assert yk.dtype == yt.dtype == dtype
    check("y", yk, yt, yr)
    check("dx", dxk, dxt, dxr)
    check("dw", dwk, dwt, dwr)
    assert "rms_norm.dw_partial" in nan_buffers


def test_llama_mode_promotes_like_hf(dev, check):
    """bf16 activations with an fp32 weight: HF's `weight * x.to(bf16)` returns fp32."""
    x = torch.randn(5, 72, device=dev, dtype=torch.bfloat16)
    w = torch.randn(72, device=dev)
    y = csrc_triton.rms_norm(x, w, EPS)
    assert y.dtype == torch.float32
    check("y", y, hf_llama(x, w), hf_llama(x.double(), w.double()))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_forward_only_path_saves_nothing(dtype, dev, nan_buffers):
    x = torch.randn(9, 3, 40, device=dev, dtype=dtype)
    w = torch.randn(40, device=dev, dtype=dtype, requires_grad=True)
    with torch.no_grad():
        y_inf = csrc_triton.rms_norm(x, w, EPS)
    assert nan_buffers == ["rms_norm.y"], nan_buffers  # no rstd buffer: nothing saved for backward
    assert y_inf.grad_fn is None
    y_train = csrc_triton.rms_norm(x, w, EPS)
    assert torch.equal(y_inf, y_train.detach())  # both paths run the same math


def test_non_contiguous_input(dev, check):
    base = torch.randn(12, 2 * 100, device=dev, dtype=torch.bfloat16)
    x = base[:, ::2]  # column stride 2: the launcher must copy or handle it
    xt = torch.randn(100, 12, device=dev, dtype=torch.bfloat16).t()  # transposed view
    w = torch.randn(100, device=dev, dtype=torch.bfloat16)
    for inp in (x, xt):
        assert not inp.is_contiguous()
        check("y", csrc_triton.rms_norm(inp, w, EPS), hf_llama(inp, w), hf_llama(inp.double(), w.double()))
    rows = torch.randn(4, 6, 100, device=dev, dtype=torch.bfloat16)[:, ::2]  # row-strided view, no copy needed
    check("y", csrc_triton.rms_norm(rows, w, EPS), hf_llama(rows, w), hf_llama(rows.double(), w.double()))


def test_frozen_weight_computes_no_dw(dev, check, nan_buffers):
    x = torch.randn(33, 64, device=dev, dtype=torch.bfloat16, requires_grad=True)
    w = torch.randn(64, device=dev, dtype=torch.bfloat16)  # frozen
    y = csrc_triton.rms_norm(x, w, EPS)
    y.backward(torch.randn_like(y))
    assert w.grad is None
    assert "rms_norm.dw_partial" not in nan_buffers
    assert x.grad is not None and torch.isfinite(x.grad).all()


def test_weight_only_grad_computes_no_dx(dev, nan_buffers):
    x = torch.randn(33, 64, device=dev, dtype=torch.float32)
    w = torch.randn(64, device=dev, requires_grad=True)
    y = csrc_triton.rms_norm(x, w, EPS)
    dy = torch.randn_like(y)
    y.backward(dy)
    assert "rms_norm.dx" not in nan_buffers and "rms_norm.dw_partial" in nan_buffers
    w64 = w.detach().double().requires_grad_()
    hf_llama(x.double(), w64).backward(dy.double())
    torch.testing.assert_close(w.grad.double(), w64.grad, rtol=1e-5, atol=1e-5)  # fp32 math vs float64


def test_bad_input_errors(dev):
    x = torch.randn(4, 48, device=dev)
    with pytest.raises(ValueError, match="weight must be 1-D"):
        csrc_triton.rms_norm(x, torch.ones(47, device=dev), EPS)
    with pytest.raises(TypeError, match="float32, float16 or bfloat16"):
        csrc_triton.rms_norm(x.long(), torch.ones(48, device=dev), EPS)
    with pytest.raises(ValueError, match="cast_mode"):
        csrc_triton.rms_norm(x, torch.ones(48, device=dev), EPS, cast_mode="t5")


def test_public_name_is_the_function():
    assert csrc_triton.rms_norm is rms_norm_fn and callable(csrc_triton.rms_norm)


@pytest.mark.parametrize("mode", ["llama", "gemma"])
def test_cast_order_mirrors_hf(mode, dev):
    """bf16: the kernel reproduces HF's rounding sequence, not just its accuracy.

    Llama rounds the normalised x to bf16 before the weight multiply (two roundings), Gemma
    multiplies in fp32 (one rounding). The kernel must match its family's HF output bit for bit on
    almost every element (rsqrt may differ by an fp32 ulp), and clearly less often the other order.
    """
    x = torch.randn(64, 200, device=dev, dtype=torch.bfloat16)
    # multiples of 1/64 in [-0.5, 0.5): w + 1 and w - 1 are exact in bf16, so only the cast order differs
    w = (torch.randint(-32, 32, (200,), device=dev) / 64).to(torch.bfloat16)
    got = csrc_triton.rms_norm(x, w, EPS, cast_mode=mode)
    mine, other = (hf_gemma, hf_llama) if mode == "gemma" else (hf_llama, hf_gemma)
    w_other = w + 1.0 if mode == "gemma" else w - 1.0  # same effective weight (exact), other cast order
    same = (got == mine(x, w)).float().mean().item()
    same_other = (got == other(x, w_other)).float().mean().item()
    assert same >= 0.99, f"only {same:.3f} of elements equal HF's {mode} output"
    assert same_other < same - 0.1, f"cast order not distinguishable ({same:.3f} vs {same_other:.3f})"
