"""SwiGLU kernels vs float64 and HF's `act_fn(gate) * up` in the same dtype."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import csrc_triton

DTYPES = [torch.float32, torch.bfloat16, torch.float16]


def _grads(fn, inputs, dy, cast=None):
    leaves = [(t.to(cast) if cast else t).detach().clone().requires_grad_() for t in inputs]
    out = fn(*leaves)
    out.backward(dy.to(out.dtype).clone())  # fresh grad tensor per backward
    return out.detach(), [leaf.grad for leaf in leaves]


def torch_swiglu(g, u):
    return F.silu(g) * u


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(1, 64), (3, 5, 200), (2, 4100)])
def test_swiglu_forward_backward(dtype, shape, dev, check):
    # x4: sigmoid's tails and large products are exercised, not only the linear region
    g, u = (torch.randn(shape, device=dev, dtype=dtype) * 4 for _ in range(2))
    dy = torch.randn(shape, device=dev)
    yk, (dgk, duk) = _grads(csrc_triton.swiglu, [g, u], dy)
    yt, (dgt, dut) = _grads(torch_swiglu, [g, u], dy)
    yr, (dgr, dur) = _grads(torch_swiglu, [g, u], dy, torch.float64)
    assert yk.dtype == dtype
    check("y", yk, yt, yr)
    check("dgate", dgk, dgt, dgr)
    check("dup", duk, dut, dur)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_concatenated_gate_up(dtype, dev, check):
    gu = torch.randn(3, 7, 2 * 96, device=dev, dtype=dtype) * 3
    dy = torch.randn(3, 7, 96, device=dev)

    def ref(t):
        a, b = t.chunk(2, dim=-1)
        return torch_swiglu(a, b)

    yk, (dk,) = _grads(csrc_triton.swiglu, [gu], dy)
    yt, (dt,) = _grads(ref, [gu], dy)
    yr, (dr,) = _grads(ref, [gu], dy, torch.float64)
    check("y", yk, yt, yr)
    check("dgate_up", dk, dt, dr)


def test_non_contiguous(dev, check):
    g = torch.randn(40, 6, device=dev, dtype=torch.bfloat16).t()  # column stride 6
    u = torch.randn(6, 80, device=dev, dtype=torch.bfloat16)[:, ::2]
    assert not g.is_contiguous() and not u.is_contiguous()
    dy = torch.randn(6, 40, device=dev)
    yk, (dgk, duk) = _grads(csrc_triton.swiglu, [g, u], dy)
    yt, (dgt, dut) = _grads(torch_swiglu, [g, u], dy)
    yr, (dgr, dur) = _grads(torch_swiglu, [g, u], dy, torch.float64)
    check("y", yk, yt, yr)
    check("dgate", dgk, dgt, dgr)
    check("dup", duk, dut, dur)


def test_forward_only_and_partial_grads(dev, nan_buffers):
    g, u = torch.randn(2, 8, 72, device=dev), torch.randn(2, 8, 72, device=dev)
    with torch.no_grad():
        y = csrc_triton.swiglu(g, u.requires_grad_())
    assert y.grad_fn is None and nan_buffers == ["swiglu.y"]
    nan_buffers.clear()
    out = csrc_triton.swiglu(g, u)  # only `up` requires grad
    dy = torch.randn_like(out)
    out.backward(dy.clone())
    assert "swiglu.dgate" not in nan_buffers and "swiglu.dup" in nan_buffers
    # fp32 math vs float64: d(up) = dy * silu(gate), a few fp32 ulps apart at most
    torch.testing.assert_close(u.grad.double(), dy.double() * F.silu(g.double()), rtol=1e-5, atol=1e-6)


def test_bad_input(dev):
    with pytest.raises(ValueError, match="share shape"):
        csrc_triton.swiglu(torch.randn(2, 4, device=dev), torch.randn(2, 5, device=dev))
    with pytest.raises(ValueError, match="even last dim"):
        csrc_triton.swiglu(torch.randn(2, 5, device=dev))
