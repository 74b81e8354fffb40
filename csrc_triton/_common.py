"""Small helpers shared by the kernel modules: buffer allocation hook, block sizing, row flattening."""
from __future__ import annotations

import os

import torch

# Every buffer a launcher writes into comes from `alloc`, so tests can swap it for a NaN-filled
# allocator (catches unwritten elements) and record which buffers exist (e.g. "no dW buffer when the
# weight is frozen"). Production: plain torch.empty.
ALLOC_LOG: list[str] | None = None  # tests set a list here to record allocation tags

# Every kernel launch goes through `launch`, so tools can see the exact arguments a launcher passes:
# benchmarks/aot/check.py records them (on meta tensors, nothing runs) and asks Triton's own binder which
# specialization a GPU would compile; the memory tracker pauses its counting while a kernel runs.
# LAUNCH_HOOK(kernel, grid, args, kwargs) replaces the launch when set. Production: None.
LAUNCH_HOOK = None


def alloc(shape, dtype: torch.dtype, device, tag: str) -> torch.Tensor:
    """Uninitialised buffer for a kernel to fill; `tag` names it for tests (e.g. "rms_norm.dw_partial")."""
    if ALLOC_LOG is not None:
        ALLOC_LOG.append(tag)
    return torch.empty(shape, dtype=dtype, device=device)


def launch(kernel, grid, *args, **kwargs) -> None:
    """``kernel[grid](*args, **kwargs)``, or LAUNCH_HOOK(kernel, grid, args, kwargs) when a tool set one."""
    if LAUNCH_HOOK is not None:
        LAUNCH_HOOK(kernel, grid, args, kwargs)
        return
    kernel[grid](*args, **kwargs)


def next_pow2(n: int) -> int:
    return 1 << max(0, (int(n) - 1).bit_length())


def row_warps(block_elems: int, per_warp: int = 512, max_warps: int = 16) -> int:
    """num_warps for a program that streams `block_elems` elements: ~`per_warp` elements per warp, a power of 2
    in 2..max_warps (Triton rejects other counts at launch; the interpreter ignores num_warps, so only the AOT
    check, benchmarks/aot/check.py, sees it)."""
    w = int(min(max_warps, max(2, block_elems // per_warp)))
    return 1 << (w.bit_length() - 1)


def as_rows(x: torch.Tensor, n_cols: int) -> torch.Tensor:
    """View x as [rows, n_cols] with unit column stride; copies only when no such view exists."""
    x2 = x.reshape(-1, n_cols)
    if x2.stride(-1) != 1 or (x2.shape[0] > 1 and x2.stride(0) < n_cols):
        x2 = x2.contiguous()
    return x2


def persistent_programs(device: torch.device, n_rows_blocks: int) -> int:
    """Program count for kernels that loop over row blocks and reduce partials (e.g. dW): ~2 per SM."""
    if device.type == "cuda":
        sms = torch.cuda.get_device_properties(device).multi_processor_count
        return max(1, min(n_rows_blocks, 2 * sms))
    return max(1, min(n_rows_blocks, 4))  # interpreter: few programs, still exercises the partial sum


def check_float(name: str, t: torch.Tensor) -> None:
    if t.dtype not in (torch.float32, torch.float16, torch.bfloat16):
        raise TypeError(f"{name} must be float32, float16 or bfloat16, got {t.dtype}; cast it with .to(torch.bfloat16)")


def check_device(name: str, t: torch.Tensor) -> None:
    """Compiled Triton kernels need CUDA tensors; CPU tensors only work under the interpreter.

    Meta tensors pass only while a LAUNCH_HOOK records launches (benchmarks/aot/check.py plans real
    shapes without memory): nothing is launched on them then."""
    if t.device.type == "meta" and LAUNCH_HOOK is not None:
        return
    if t.device.type != "cuda" and os.environ.get("TRITON_INTERPRET") != "1":
        raise RuntimeError(
            f"csrc_triton kernels run on CUDA tensors, but {name} is on {t.device}. On CPU use torch ops "
            "(FreezeConfig kernels='torch'), or set TRITON_INTERPRET=1 before triton is imported (tests)."
        )
