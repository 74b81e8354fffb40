"""The test-only interpreter patch of tests/_kernel_fixtures.py is in effect: fp32 -> bf16 casts round to nearest even, as on a GPU."""
from __future__ import annotations

import os

import pytest
import torch

triton = pytest.importorskip("triton")
import triton.language as tl  # noqa: E402

pytestmark = pytest.mark.skipif(os.environ.get("TRITON_INTERPRET") != "1", reason="checks the CPU interpreter only")


@triton.jit
def _cast_kernel(x_ptr, y_ptr, N: tl.constexpr):
    offs = tl.arange(0, N)
    tl.store(y_ptr + offs, tl.load(x_ptr + offs).to(tl.bfloat16))


def test_fp32_to_bf16_rounds_to_nearest_even():
    # 1 + 3 * 2**-9 lies 3/4 of the way from 1 to its bf16 neighbour 1 + 2**-7: the unpatched
    # interpreter truncates to 1.0 (seen), torch and the GPU round to 1 + 2**-7.
    x = torch.tensor([1 + 3 * 2**-9, -(1 + 3 * 2**-9), 3.0, 1e-3] * 4, dtype=torch.float32)
    y = torch.empty_like(x, dtype=torch.bfloat16)
    _cast_kernel[(1,)](x, y, N=16)
    assert torch.equal(y, x.to(torch.bfloat16))
    assert y[0].item() == 1 + 2**-7
