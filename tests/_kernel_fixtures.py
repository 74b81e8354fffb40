"""Kernel-test setup: Triton interpreter on CPU, NaN-filled kernel buffers, and the error-budget rule.

Fixtures for every test that runs csrc_triton kernels: tests/csrc_triton/ (through its conftest.py) and
tests/test_kernels.py (the swaps of fastfreeze/kernels.py), which import them by name.
"""
from __future__ import annotations

import os
import zlib

import pytest
import torch

# tests/conftest.py turns the interpreter on (without CUDA) before anything imports triton, so the
# kernels are interpreted here; on a CUDA machine they are compiled and run on the GPU.
pytest.importorskip("triton")


def _interpreter_rounds_bf16_to_nearest_even() -> None:
    """Triton's interpreter truncates fp32 -> bf16 casts (and stores); GPUs round to nearest even.

    Patch the interpreter's cast (test-only) so CPU runs check the rounding the GPU performs;
    otherwise every bf16 kernel output carries up to 1 ulp of truncation the real kernel does not.
    """
    import numpy as np
    import triton.language as tl
    from triton.runtime import interpreter

    builder = interpreter.InterpreterBuilder
    if getattr(builder, "_fastfreeze_rtne", False):
        return
    missing = [name for name, owner in (("InterpreterBuilder.cast_impl", builder), ("TensorHandle", interpreter))
               if not hasattr(owner, name.rsplit(".", 1)[-1])]
    if missing:  # a Triton release moved the interpreter internals this test-only patch replaces
        raise RuntimeError(f"tests/_kernel_fixtures.py: triton.runtime.interpreter has no {missing}; update "
                           "_interpreter_rounds_bf16_to_nearest_even for this Triton version.")
    original = builder.cast_impl

    def cast_impl(self, src, dst_type):
        if src.dtype.scalar == tl.float32 and dst_type.scalar == tl.bfloat16:
            bf = torch.from_numpy(np.ascontiguousarray(src.data, dtype=np.float32)).to(torch.bfloat16)
            return interpreter.TensorHandle(bf.view(torch.int16).numpy().view(np.uint16), tl.bfloat16)
        return original(self, src, dst_type)

    builder.cast_impl = cast_impl
    builder._fastfreeze_rtne = True


if os.environ.get("TRITON_INTERPRET") == "1":
    _interpreter_rounds_bf16_to_nearest_even()

from csrc_triton import _common  # noqa: E402

DTYPES = [torch.float32, torch.bfloat16, torch.float16]
# The rule: kernel error vs float64 <= FACTOR * (torch's own error in the same dtype) + one ulp of
# the largest reference value (the rounding any output stored in that dtype may carry).
FACTOR = 2.0


@pytest.fixture
def dev() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


@pytest.fixture(autouse=True)
def nan_buffers(monkeypatch):
    """Every kernel output buffer starts as NaN (unwritten elements show up); yields the allocation tags."""
    tags: list[str] = []

    def alloc(shape, dtype, device, tag):
        tags.append(tag)
        return torch.full(shape, float("nan"), dtype=dtype, device=device)

    monkeypatch.setattr(_common, "alloc", alloc)
    return tags


@pytest.fixture(autouse=True)
def _fresh_seed(request):
    # Fresh random inputs per test (seeded from the test id, so a failure reproduces);
    # KERNEL_TEST_SEED=n draws another set everywhere.
    torch.manual_seed(zlib.crc32(request.node.nodeid.encode()) ^ int(os.environ.get("KERNEL_TEST_SEED", "0")))


def _ulp(dtype: torch.dtype) -> float:
    return torch.finfo(dtype).eps


@pytest.fixture
def check():
    """check(name, kernel_out, torch_out, ref64): the error-budget assertion, plus finite outputs."""

    def _check(name, kernel_out, torch_out, ref64, factor=FACTOR, floor=0.0):
        # floor: an error no implementation in this dtype can avoid (e.g. the loss of logits that HF's
        # lm_head already rounded); stands in for torch's error where torch is luckier than that.
        assert kernel_out.shape == ref64.shape, f"{name}: shape {tuple(kernel_out.shape)} != {tuple(ref64.shape)}"
        assert torch.isfinite(kernel_out).all(), f"{name}: kernel output has NaN/inf"
        ref = ref64.double().cpu()
        err_k = (kernel_out.double().cpu() - ref).abs().max().item()
        err_t = (torch_out.double().cpu() - ref).abs().max().item()
        atol = _ulp(torch_out.dtype) * ref.abs().max().item()
        assert err_k <= factor * max(err_t, floor) + atol, (
            f"{name}: kernel max error {err_k:.3e} > {factor} x max(torch's {err_t:.3e}, floor {floor:.3e}) "
            f"+ {atol:.3e} ({torch_out.dtype})"
        )

    return _check
