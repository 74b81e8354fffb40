"""Fused linear cross-entropy vs float64 and HF's loss path (lm_head logits, .float(), cross_entropy)."""
from __future__ import annotations

import importlib

import pytest
import torch
import torch.nn.functional as F

import csrc_triton

lce_mod = importlib.import_module("csrc_triton.linear_cross_entropy")

# Under the interpreter only the CE kernel is Triton; the chunk GEMMs are torch, so bf16 is safe on CPU.
DTYPES = [torch.float32, torch.bfloat16, torch.float16]
N, H, V = 37, 40, 300  # 3 chunks of 16 tokens; vocab spans 5 kernel blocks of 64


@pytest.fixture(autouse=True)
def small_vocab_blocks(monkeypatch):
    monkeypatch.setattr(lce_mod, "MAX_BLOCK_V", 64)  # exercise the multi-block online logsumexp


def hf_loss(hidden, weight, labels, bias=None, num_items_in_batch=None, softcap=None, reduction=None):
    """HF: logits from lm_head in the model dtype, optional Gemma2 softcap, then ForCausalLMLoss."""
    logits = F.linear(hidden, weight, bias)
    if softcap is not None:
        logits = torch.tanh(logits / softcap) * softcap
    logits = logits.float() if logits.dtype != torch.float64 else logits
    if reduction is None:
        reduction = "sum" if num_items_in_batch is not None else "mean"
    loss = F.cross_entropy(logits, labels, ignore_index=-100, reduction=reduction)
    return loss / num_items_in_batch if num_items_in_batch is not None else loss


def rounded_logits_floor(hidden, weight, labels, bias=None, softcap=None, num_items_in_batch=None):
    """|loss error| of an exact loss evaluated on logits rounded to the activation dtype (as lm_head
    returns them): every implementation that, like HF, starts from those logits carries it. A single
    scalar's error is one random draw, so torch can land below it by luck."""
    z64 = F.linear(hidden.double(), weight.double(), None if bias is None else bias.double())
    z = z64.to(hidden.dtype).double()
    if softcap is not None:
        z, z64 = (torch.tanh(t / softcap) * softcap for t in (z, z64))
    return (hf_loss_from_logits(z, labels, num_items_in_batch) - hf_loss_from_logits(z64, labels, num_items_in_batch)
            ).abs().item()


def hf_loss_from_logits(logits, labels, num_items_in_batch=None):
    if num_items_in_batch is None:
        return F.cross_entropy(logits, labels, ignore_index=-100)
    return F.cross_entropy(logits, labels, ignore_index=-100, reduction="sum") / num_items_in_batch


def _inputs(dtype, dev, n=N, ignore_every=5):
    hidden = torch.randn(n, H, device=dev, dtype=dtype)
    weight = (torch.randn(V, H, device=dev) / H**0.5 * 3).to(dtype)
    labels = torch.randint(0, V, (n,), device=dev)
    labels[::ignore_every] = -100
    return hidden, weight, labels


def _run(fn, tensors, grad_mask, g, cast=None, **kw):
    leaves = [None if t is None else (t.to(cast) if cast else t).detach().clone().requires_grad_(m)
              for t, m in zip(tensors, grad_mask)]
    loss = fn(leaves[0], leaves[1], kw.pop("labels"), bias=leaves[2], **kw)
    loss.backward(g.to(loss.dtype).clone())  # grad_output != 1: backward must scale
    return loss.detach(), [None if t is None else t.grad for t in leaves]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("variant", ["mean", "num_items", "bias+softcap"])
def test_loss_and_grads(dtype, variant, dev, check, nan_buffers):
    hidden, weight, labels = _inputs(dtype, dev)
    bias = torch.randn(V, device=dev, dtype=dtype) if variant == "bias+softcap" else None
    kw = {"labels": labels}
    if variant == "num_items":
        kw["num_items_in_batch"] = torch.tensor(51, device=dev)  # gradient accumulation: more than here
    if variant == "bias+softcap":
        kw["softcap"] = 3.0
    g = torch.rand((), device=dev) + 0.5
    mask = [True, True, bias is not None]
    lk, gk = _run(csrc_triton.linear_cross_entropy, [hidden, weight, bias], mask, g, chunk_size=16, **dict(kw))
    lt, gt = _run(hf_loss, [hidden, weight, bias], mask, g, **dict(kw))
    lr, gr = _run(hf_loss, [hidden, weight, bias], mask, g, torch.float64, **dict(kw))
    assert lk.dtype == torch.float32
    floor = rounded_logits_floor(hidden, weight, labels, bias, kw.get("softcap"), kw.get("num_items_in_batch"))
    check("loss", lk, lt, lr, floor=floor)
    for name, a, b, c in zip(("dhidden", "dweight", "dbias"), gk, gt, gr):
        if c is not None:
            assert a.dtype == dtype
            check(name, a, b, c)
    assert nan_buffers.count("lce.logits_chunk") == 1  # one reused [chunk, V] buffer, never [N, V]


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_frozen_head_computes_no_dw(dtype, dev, check, nan_buffers):
    hidden, weight, labels = _inputs(dtype, dev)
    h = hidden.clone().requires_grad_()
    loss = csrc_triton.linear_cross_entropy(h, weight, labels, chunk_size=16)
    loss.backward()
    assert weight.grad is None and "lce.dw" not in nan_buffers and "lce.dx" in nan_buffers
    h_t = hidden.clone().requires_grad_()
    hf_loss(h_t, weight, labels).backward()
    h64 = hidden.double().requires_grad_()
    hf_loss(h64, weight.double(), labels).backward()
    check("dhidden", h.grad, h_t.grad, h64.grad)


def test_head_only_trainable_computes_no_dx(dev, nan_buffers):
    hidden, weight, labels = _inputs(torch.float32, dev)
    w = weight.clone().requires_grad_()
    csrc_triton.linear_cross_entropy(hidden, w, labels, chunk_size=16).backward()
    assert "lce.dx" not in nan_buffers and "lce.dw" in nan_buffers
    w64 = weight.double().requires_grad_()
    hf_loss(hidden.double(), w64, labels).backward()
    torch.testing.assert_close(w.grad.double(), w64.grad, rtol=1e-4, atol=1e-6)  # fp32 vs float64


@pytest.mark.parametrize("reduction", ["sum", "none"])
def test_forward_only_reductions(reduction, dev, nan_buffers):
    hidden, weight, labels = _inputs(torch.float32, dev)
    with torch.no_grad():
        got = csrc_triton.linear_cross_entropy(hidden, weight, labels, reduction=reduction, chunk_size=16)
    assert "lce.dx" not in nan_buffers and "lce.dw" not in nan_buffers
    ref = hf_loss(hidden.double(), weight.double(), labels, reduction=reduction)
    torch.testing.assert_close(got.double(), ref, rtol=1e-5, atol=1e-5)  # fp32 vs float64


def test_chunk_of_only_ignored_tokens_and_one_token(dev):
    hidden, weight, labels = _inputs(torch.float32, dev)
    labels[:16] = -100  # first chunk entirely ignored: its dX rows must be exactly zero
    h = hidden.clone().requires_grad_()
    loss = csrc_triton.linear_cross_entropy(h, weight, labels, chunk_size=16)
    loss.backward()
    assert torch.isfinite(loss) and torch.equal(h.grad[:16], torch.zeros_like(h.grad[:16]))
    ref = hf_loss(hidden.double(), weight.double(), labels)
    torch.testing.assert_close(loss.double(), ref, rtol=1e-5, atol=1e-5)
    one = csrc_triton.linear_cross_entropy(hidden[:1], weight, labels[16:17])
    torch.testing.assert_close(one.double(), hf_loss(hidden[:1].double(), weight.double(), labels[16:17]),
                               rtol=1e-5, atol=1e-5)


def test_non_contiguous_hidden_and_default_chunk(dev, check):
    base = torch.randn(N, 2 * H, device=dev, dtype=torch.float16)
    hidden = base[:, ::2]
    _, weight, labels = _inputs(torch.float16, dev)
    got = csrc_triton.linear_cross_entropy(hidden, weight, labels)
    check("loss", got, hf_loss(hidden, weight, labels), hf_loss(hidden.double(), weight.double(), labels))


def test_backward_twice_is_an_error(dev):
    hidden, weight, labels = _inputs(torch.float32, dev)
    h = hidden.requires_grad_()
    loss = csrc_triton.linear_cross_entropy(h, weight, labels, chunk_size=16)
    loss.backward(retain_graph=True)
    with pytest.raises(RuntimeError, match="backward ran twice"):
        loss.backward()


def test_bad_input(dev):
    hidden, weight, labels = _inputs(torch.float32, dev)
    bad = labels.clone()
    bad[3] = V
    with pytest.raises(ValueError, match="labels must be in"):
        csrc_triton.linear_cross_entropy(hidden, weight, bad)
    with pytest.raises(ValueError, match="flatten"):
        csrc_triton.linear_cross_entropy(hidden[None], weight, labels)
    with pytest.raises(ValueError, match="share a dtype"):
        csrc_triton.linear_cross_entropy(hidden, weight.half(), labels)
    with pytest.raises(ValueError, match="forward-only"):
        csrc_triton.linear_cross_entropy(hidden.requires_grad_(), weight, labels, reduction="none")


def test_autocast_casts_like_lm_head(dev):
    """Under autocast, nn.Linear would run in the autocast dtype; the fused op does the same and
    sends gradients back to the fp32 master tensors."""
    hidden, weight, labels = _inputs(torch.float32, dev)
    h, w = hidden.clone().requires_grad_(), weight.clone().requires_grad_()
    with torch.autocast(dev, dtype=torch.bfloat16):
        loss = csrc_triton.linear_cross_entropy(h, w, labels, chunk_size=16)
    loss.backward()
    assert h.grad.dtype == torch.float32 and w.grad.dtype == torch.float32
    ref = hf_loss(hidden.bfloat16(), weight.bfloat16(), labels)
    torch.testing.assert_close(loss, ref, rtol=2e-3, atol=2e-3)  # both from the same bf16-rounded logits
