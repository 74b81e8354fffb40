"""Make every rank take the same branch: one small all_reduce, the only collective the core issues itself."""
from __future__ import annotations

import torch


def several_ranks() -> bool:
    """Whether a torch.distributed group with more than one rank is running."""
    return (torch.distributed.is_available() and torch.distributed.is_initialized()
            and torch.distributed.get_world_size() > 1)


def ranks_agree(value: float, device: torch.device | str, op: str) -> float:
    """`value` reduced over all ranks with `op` ("min": all ranks must say yes; "max": the worst rank's
    number), or `value` itself in one process. Every rank must call it, whatever its own value, or the
    collective does not pair (a hang). float64, so a diff or a 0/1 flag comes back unrounded.

    Usage:
        hit = bool(ranks_agree(float(hit), device, "min"))
    """
    if not several_ranks():
        return value
    reduce_op = {"min": torch.distributed.ReduceOp.MIN, "max": torch.distributed.ReduceOp.MAX}[op]
    flag = torch.tensor([value], dtype=torch.float64, device=device)
    torch.distributed.all_reduce(flag, op=reduce_op)
    return flag.item()
