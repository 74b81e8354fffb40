"""What bench_kernels compares: HF's own torch code for each op, torch built-ins, torch.compile, Liger-Kernel and ours."""
from __future__ import annotations

import torch
import torch.nn.functional as F

EPS = 1e-6


def hf_rms_norm(x, w):
    dt = x.dtype
    h = x.to(torch.float32)
    h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + EPS)
    return w * h.to(dt)


def torch_rms_norm(x, w):
    return F.rms_norm(x, (x.shape[-1],), w, EPS)


def eager_swiglu(g, u):
    return F.silu(g) * u


def _rotate_half(x):
    x1, x2 = x[..., : x.shape[-1] // 2], x[..., x.shape[-1] // 2:]
    return torch.cat((-x2, x1), dim=-1)


def hf_rope(q, k, cos, sin):
    cos, sin = cos.unsqueeze(1), sin.unsqueeze(1)
    return q * cos + _rotate_half(q) * sin, k * cos + _rotate_half(k) * sin


def hf_loss(h, w, labels):
    logits = h @ w.t()  # lm_head output in bf16 (Trainer drops the model output before backward)
    loss = F.cross_entropy(logits.float(), labels, ignore_index=-100)
    return loss, logits


# ---------------------------------------------------------------- providers
def _liger():
    try:
        import liger_kernel.transformers as lt
        from liger_kernel.ops.swiglu import LigerSiLUMulFunction
        return lt, LigerSiLUMulFunction
    except Exception:
        return None


def providers(op: str, hidden: int, dev, use_compile: bool):
    """name -> callable with the op's signature; ours first."""
    import csrc_triton as ct

    out = {}
    liger = _liger()
    if op == "rms_norm":
        out["fastfreeze"] = lambda x, w: ct.rms_norm(x, w, EPS)
        out["hf_eager"] = hf_rms_norm
        out["torch_F.rms_norm"] = torch_rms_norm
        if use_compile:
            out["torch.compile(hf)"] = torch.compile(hf_rms_norm, dynamic=False)
        if liger:
            mod = liger[0].LigerRMSNorm(hidden, eps=EPS).to(dev, torch.bfloat16)
            out["liger"] = lambda x, w: mod.weight.requires_grad_(w.requires_grad) and mod(x)
    elif op == "swiglu":
        out["fastfreeze"] = ct.swiglu
        out["torch_eager"] = eager_swiglu
        if use_compile:
            out["torch.compile"] = torch.compile(eager_swiglu, dynamic=False)
        if liger:
            out["liger"] = liger[1].apply
    elif op == "rope":
        out["fastfreeze"] = ct.apply_rope
        out["hf_eager"] = hf_rope
        if use_compile:
            out["torch.compile(hf)"] = torch.compile(hf_rope, dynamic=False)
        if liger:
            out["liger"] = liger[0].liger_rotary_pos_emb
    elif op == "linear_cross_entropy":
        out["fastfreeze"] = lambda h, w, y: ct.linear_cross_entropy(h, w, y)
        out["hf_loss_path"] = lambda h, w, y: hf_loss(h, w, y)[0]
        if liger:
            loss_mod = liger[0].LigerFusedLinearCrossEntropyLoss()
            out["liger_flce"] = lambda h, w, y: loss_mod(w, h, y)
    return out
