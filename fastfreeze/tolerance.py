"""When two runs of the same computation count as equal: the install-time checks' one tolerance rule.

The install-time checks (`fastfreeze.probe`: fast path vs the model's own forward;
`fastfreeze.cache.packing`: a document packed vs alone) compare a tensor from a run that must compute
what a reference run computes. They measure the largest difference relative to the reference's
largest magnitude (`rel_diff`) and accept it as rounding up to `tolerance(dtype)`.

Usage:
    same = rel_diff(got, ref) <= tolerance(ref.dtype)
"""
from __future__ import annotations

import torch


def tolerance(dtype: torch.dtype) -> float:
    """Largest `rel_diff` accepted as rounding. Both runs use the same kernels in the same order, so on
    CPU they are bitwise equal; on GPUs, atomics in backward kernels and a long packed row against a
    short one move the last bits (a few ulp of the dtype). The faults the checks guard against (a wrong
    tensor, zeros, a missing gradient, documents attending to each other) are O(1) relative errors, far
    above either bound."""
    return 1e-5 if dtype in (torch.float32, torch.float64) else 2e-2


def rel_diff(got: torch.Tensor, ref: torch.Tensor) -> float:
    """max |got - ref| / max |ref|, in float64 (0.0 for empty tensors). inf when either holds a
    non-finite value: such a pair cannot be shown equal (and NaN would compare as "not above" a bound)."""
    got, ref = got.detach().double(), ref.detach().double()
    if not (torch.isfinite(got).all() and torch.isfinite(ref).all()):
        return float("inf")
    return ((got - ref).abs().max() / ref.abs().max().clamp_min(1e-12)).item() if ref.numel() else 0.0
