"""ranks_agree: one process returns its own value; two gloo ranks get the min / max of both."""
import os
import tempfile

import torch
import torch.multiprocessing as mp

from fastfreeze._dist import ranks_agree, several_ranks


def test_one_process_returns_its_own_value():
    assert not several_ranks()
    assert ranks_agree(0.25, "cpu", "min") == 0.25


def _rank(rank: int, init_file: str, out: str) -> None:
    torch.distributed.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    try:
        mine = [1.0, 0.0][rank], [0.5, 3e-7][rank]
        got = (several_ranks(), ranks_agree(mine[0], "cpu", "min"), ranks_agree(mine[1], "cpu", "max"))
        torch.save(got, f"{out}.{rank}")
    finally:
        torch.distributed.destroy_process_group()


def test_two_ranks_agree_on_min_and_max():
    with tempfile.TemporaryDirectory() as d:
        out = os.path.join(d, "got")
        mp.start_processes(_rank, args=(os.path.join(d, "init"), out), nprocs=2, start_method="spawn")
        got = [torch.load(f"{out}.{r}") for r in range(2)]
    # Rank 0 says yes (1.0), rank 1 no (0.0): "min" is no on both; "max" keeps the larger diff, unrounded.
    assert got == [(True, 0.0, 0.5), (True, 0.0, 0.5)]
