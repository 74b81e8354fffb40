"""RoPE kernel vs float64 and HF's apply_rotary_pos_emb (full and partial rotary, GQA, shared cos/sin)."""
from __future__ import annotations

import pytest
import torch

import csrc_triton

DTYPES = [torch.float32, torch.bfloat16, torch.float16]


def rotate_half(x):
    x1, x2 = x[..., : x.shape[-1] // 2], x[..., x.shape[-1] // 2:]
    return torch.cat((-x2, x1), dim=-1)


def hf_rope(q, k, cos, sin):
    """HF apply_rotary_pos_emb(unsqueeze_dim=1), with GPT-NeoX's split when rotary_dim < head_dim."""
    r = cos.shape[-1]
    cos, sin = cos.unsqueeze(1), sin.unsqueeze(1)
    out = []
    for x in (q, k):
        xr, xp = x[..., :r], x[..., r:]
        out.append(torch.cat(((xr * cos) + (rotate_half(xr) * sin), xp), dim=-1))
    return tuple(out)


def _cos_sin(batch, seq, rotary_dim, dtype, dev):
    """As LlamaRotaryEmbedding builds them: cat(freqs, freqs), cast to the activation dtype."""
    inv_freq = 1.0 / (10000 ** (torch.arange(0, rotary_dim, 2, device=dev).float() / rotary_dim))
    pos = torch.randint(0, 4096, (batch, seq), device=dev).float()
    emb = torch.cat([pos[..., None] * inv_freq] * 2, dim=-1)
    return emb.cos().to(dtype), emb.sin().to(dtype)


def _run(fn, q, k, cos, sin, dq, dk, cast=None):
    leaves = [(t.to(cast) if cast else t).detach().clone().requires_grad_() for t in (q, k)]
    c, s = (cos.to(cast), sin.to(cast)) if cast else (cos, sin)
    oq, ok = fn(leaves[0], leaves[1], c, s)
    torch.autograd.backward([oq, ok], [dq.to(oq.dtype).clone(), dk.to(ok.dtype).clone()])
    return oq.detach(), ok.detach(), leaves[0].grad, leaves[1].grad


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("head_dim,rotary_dim", [(64, 64), (80, 20), (6, 2)])
@pytest.mark.parametrize("cos_batch", [1, 2])
def test_rope_forward_backward(dtype, head_dim, rotary_dim, cos_batch, dev, check):
    B, T, Hq, Hk = 2, 7, 4, 2  # GQA: fewer k heads
    # q as HF produces it: [B, T, H, D] projection viewed and transposed (non-contiguous)
    q = torch.randn(B, T, Hq, head_dim, device=dev, dtype=dtype).transpose(1, 2)
    k = torch.randn(B, Hk, T, head_dim, device=dev, dtype=dtype)
    cos, sin = _cos_sin(cos_batch, T, rotary_dim, dtype, dev)
    dq, dk = torch.randn(q.shape, device=dev), torch.randn(k.shape, device=dev)
    got = _run(csrc_triton.apply_rope, q, k, cos, sin, dq, dk)
    ref_t = _run(hf_rope, q, k, cos, sin, dq, dk)
    ref64 = _run(hf_rope, q, k, cos, sin, dq, dk, torch.float64)
    for name, a, b, c in zip(("q", "k", "dq", "dk"), got, ref_t, ref64):
        check(name, a, b, c)
    assert got[0].dtype == dtype


def test_backward_is_transposed_rotation_for_any_cos(dev, check):
    """cos/sin halves that differ (not cat(f, f)): backward must still be the exact transpose."""
    B, T, D = 1, 3, 8
    q, k = torch.randn(B, 2, T, D, device=dev), torch.randn(B, 1, T, D, device=dev)
    cos, sin = torch.randn(1, T, D, device=dev), torch.randn(1, T, D, device=dev)
    dq, dk = torch.randn(q.shape, device=dev), torch.randn(k.shape, device=dev)
    got = _run(csrc_triton.apply_rope, q, k, cos, sin, dq, dk)
    ref_t = _run(hf_rope, q, k, cos, sin, dq, dk)
    ref64 = _run(hf_rope, q, k, cos, sin, dq, dk, torch.float64)
    for name, a, b, c in zip(("q", "k", "dq", "dk"), got, ref_t, ref64):
        check(name, a, b, c)


def test_forward_only_and_unused_k(dev, nan_buffers):
    q, k = torch.randn(1, 2, 5, 16, device=dev), torch.randn(1, 2, 5, 16, device=dev)
    cos, sin = _cos_sin(1, 5, 16, torch.float32, dev)
    with torch.no_grad():
        oq, ok = csrc_triton.apply_rope(q.requires_grad_(), k, cos, sin)
    assert oq.grad_fn is None and nan_buffers == ["rope.q", "rope.k"]
    nan_buffers.clear()
    oq, _ = csrc_triton.apply_rope(q, k, cos, sin)
    oq.backward(torch.randn_like(oq))
    assert nan_buffers == ["rope.q", "rope.k", "rope.dq"]  # k needs no grad: no dk launch
    ref_q, _ = hf_rope(q.detach().double(), k.double(), cos.double(), sin.double())
    torch.testing.assert_close(oq.detach().double(), ref_q, rtol=1e-5, atol=1e-5)


def test_bad_input(dev):
    q = torch.randn(1, 2, 5, 16, device=dev)
    cos, sin = _cos_sin(1, 5, 16, torch.float32, dev)
    with pytest.raises(ValueError, match="rotary_emb output"):
        csrc_triton.apply_rope(q, q, cos[:, :4], sin[:, :4])
    with pytest.raises(ValueError, match="rotary_dim must be even"):
        csrc_triton.apply_rope(q, q, cos[..., :3], sin[..., :3])
    with pytest.raises(ValueError, match="detach"):
        csrc_triton.apply_rope(q, q, cos.requires_grad_(), sin)
    with pytest.raises(ValueError, match=r"\[B, heads, T, head_dim\]"):
        csrc_triton.apply_rope(q[0], q[0], cos, sin)
