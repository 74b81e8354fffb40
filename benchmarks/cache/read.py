"""The disk cache's read path against a raw read of the same bytes, side by side: what fraction of the hardware's rate it gets.

One process writes boundary rows ([seq, H] fp32, random values: a read costs the same whatever the
bytes) to a DiskCache, then measures, in interleaved rounds (the order rotates each round, so load from
other processes falls on every arm alike), reading the same bytes four ways:

- **read path**: what a cache hit costs the data loader: a fresh DiskCache (new memory maps), then per
  batch ``get_many`` (index lookups, zero-copy row views) + ``assemble`` into the ``[B, T, H]`` buffer
  the host-to-device copy reads from (pinned with ``--pin``, which needs CUDA);
- **memcpy**: the shard files memory-mapped afresh and copied batch by batch into a new buffer
  (``ctypes.memmove``): the least any read from the page cache costs;
- **np.fromfile**: each shard file read whole into a new array (``read()`` from the page cache);
- **cold**: the read path and np.fromfile again after the shards were dropped from the page cache
  (POSIX_FADV_DONTNEED; the kernel may keep some pages, so an upper bound on a truly cold read).

The read path is reported as a fraction of each raw rate (target: >= 0.7). Reads run on one torch
thread, as in a DataLoader worker: on a loaded machine a second intra-op thread waits for a descheduled
peer at every op (that, not the disk, is why the first version of this benchmark read 0.05 GB/s).
The machine's load (``os.getloadavg``) is recorded before and after. Writes
benchmarks/results/cache_read_<tag>.json and .md.

Usage:
    python -m benchmarks.cache                       # about a minute
    python -m benchmarks.cache --examples 512 --tag cpu-big
"""
from __future__ import annotations

import argparse
import ctypes
import datetime
import json
import mmap
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[2]  # the repository (benchmarks/cache/read.py)
ARMS = ("read_path", "memcpy", "fromfile", "cold_read_path", "cold_fromfile")


def _shards(path: str) -> list[str]:
    return sorted(os.path.join(path, fn) for fn in os.listdir(path) if fn.endswith(".bin"))


def _drop_page_cache(path: str) -> None:
    for fn in _shards(path):
        fd = os.open(fn, os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def _read_path(cache_dir, fp, batches, hidden, pin) -> float:
    """Seconds for get_many + assemble over every batch (fresh DiskCache: new maps, no crc pass)."""
    from fastfreeze.cache import DiskCache
    from fastfreeze.cache.collator import assemble

    cache = DiskCache(cache_dir, fp, readonly=True)
    for shard in cache._shards.values():  # written and verified by this process: skip the crc read
        shard.verified = True
    start = time.perf_counter()
    for seg in batches:
        rows = cache.get_many(seg.keys)
        assemble(rows, seg, hidden, torch.float32, pin_memory=pin)  # the host-to-device copy's source
    return time.perf_counter() - start


def _memcpy(path: str, batch_bytes: int) -> float:
    """Seconds to map every shard afresh and memmove it, batch_bytes at a time, into new buffers."""
    start = time.perf_counter()
    for fn in _shards(path):
        with open(fn, "rb") as f:
            mm = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        src = np.frombuffer(mm, dtype=np.uint8)
        for off in range(0, src.nbytes, batch_bytes):
            n = min(batch_bytes, src.nbytes - off)
            dst = np.empty(n, dtype=np.uint8)
            ctypes.memmove(dst.ctypes.data, src.ctypes.data + off, n)
        del src
        mm.close()
    return time.perf_counter() - start


def _fromfile(path: str) -> float:
    start = time.perf_counter()
    for fn in _shards(path):
        np.fromfile(fn, dtype=np.uint8)
    return time.perf_counter() - start


def _round(arm: str, work: str, path: str, segs, batch_bytes: int, pin: bool) -> float:
    if arm.startswith("cold_"):
        _drop_page_cache(path)
    if arm.endswith("read_path"):
        return _read_path(work, "bench", segs, 512, pin)
    if arm == "memcpy":
        return _memcpy(path, batch_bytes)
    return _fromfile(path)


def run(examples: int, seq: int, batch: int, rounds: int, workdir: str, pin: bool = False) -> dict:
    from fastfreeze.cache import DiskCache
    from fastfreeze.cache.segments import segment_batch

    g = torch.Generator().manual_seed(1)
    ids = [torch.randint(1, 8192, (batch, seq), generator=g) for _ in range(examples // batch)]
    segs = [segment_batch(x) for x in ids]
    cache = DiskCache(workdir, "bench", dtype=torch.float32)
    for seg in segs:
        cache.put_many(seg.keys, list(torch.randn(batch, seq, 512, generator=g)))
    cache.flush()
    nbytes = cache.nbytes
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as in a DataLoader worker; the raw reads are single-threaded too
    seconds = {arm: [] for arm in ARMS}
    load_before = os.getloadavg()
    try:
        _read_path(workdir, "bench", segs, 512, pin)  # warm the page cache and the allocator once
        for r in range(rounds):
            for j in range(len(ARMS)):  # rotate the order: no arm always runs first or after a cold drop
                arm = ARMS[(r + j) % len(ARMS)]
                seconds[arm].append(_round(arm, workdir, cache.path, segs, batch * seq * 512 * 4, pin))
    finally:
        torch.set_num_threads(threads)
    med = {arm: statistics.median(s) for arm, s in seconds.items()}
    out = {"tokens_per_pass": examples // batch * batch * seq, "bytes_per_pass": nbytes, "rounds": rounds,
           "torch_threads": 1, "pinned": pin, "loadavg_before": list(load_before), "loadavg_after": list(os.getloadavg()),
           "GBps": {arm: nbytes / med[arm] / 1e9 for arm in ARMS}, "seconds": seconds}
    out["read_path_GBps"] = out["GBps"]["read_path"]
    out["read_path_vs_memcpy"] = med["memcpy"] / med["read_path"]
    out["read_path_vs_fromfile"] = med["fromfile"] / med["read_path"]
    out["cold_read_path_vs_cold_fromfile"] = med["cold_fromfile"] / med["cold_read_path"]
    # Each round's own ratio too: the spread says how much the load moved between arms.
    out["per_round_vs_memcpy"] = [m / p for m, p in zip(seconds["memcpy"], seconds["read_path"])]
    return out


LABELS = {"read_path": "read path: get_many + assemble (page cache warm)", "memcpy": "raw: mmap + memcpy, same bytes",
          "fromfile": "raw: np.fromfile, same bytes (page cache)", "cold_read_path": "read path, page cache dropped first",
          "cold_fromfile": "raw: np.fromfile, page cache dropped first"}


def report(res: dict) -> str:
    m, r = res["meta"], res["result"]
    frac = {"read_path": "1.00", "memcpy": f"read path = {r['read_path_vs_memcpy']:.2f}",
            "fromfile": f"read path = {r['read_path_vs_fromfile']:.2f}", "cold_read_path": "1.00",
            "cold_fromfile": f"cold read path = {r['cold_read_path_vs_cold_fromfile']:.2f}"}
    lo, hi = min(r["per_round_vs_memcpy"]), max(r["per_round_vs_memcpy"])
    lines = [f"## Cache read path vs a raw read of the same bytes ({m['tag']})", "",
             f"{m['date']} · {m['device']} · torch {m['torch']} · `{m['command']}`", "",
             f"Load average (1/5/15 min) before {'/'.join(f'{x:.2f}' for x in r['loadavg_before'])}, after "
             f"{'/'.join(f'{x:.2f}' for x in r['loadavg_after'])} (2 cores shared with other engineers: the ratios, "
             "measured side by side in interleaved rounds, are the result; the absolute rates move with the load).", "",
             f"{r['tokens_per_pass']:,} tokens of [{m['seq']}, 512] fp32 rows, {r['bytes_per_pass'] / 2**20:.0f} MiB per pass, "
             f"batch {m['batch']}; median of {r['rounds']} rounds; one torch thread (as in a DataLoader worker); "
             f"output {'pinned' if r['pinned'] else 'not pinned (no CUDA here)'}.", "",
             "| path | GB/s | read path as a fraction of it |", "|---|---|---|"]
    lines += [f"| {LABELS[a]} | {r['GBps'][a]:.2f} | {frac[a]} |" for a in ARMS]
    lines += ["", f"Per round, read path / memcpy ranged {lo:.2f}-{hi:.2f}. Target: the read path at >= 0.70 of the raw "
              "rate. `fastfreeze estimate --read-json <this .json>` uses the read path's warm rate.", ""]
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--examples", type=int, default=256)
    p.add_argument("--seq", type=int, default=256)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--pin", action="store_true", help="assemble into pinned memory (needs CUDA), as the collator does on a GPU")
    p.add_argument("--tag", default="cpu")
    p.add_argument("--workdir", default=None, help="where the cache shards go (default: a temporary directory)")
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    a = p.parse_args(argv)
    if a.pin and not torch.cuda.is_available():
        p.error("--pin needs CUDA (pinned host memory); leave it out on a CPU-only machine")
    with tempfile.TemporaryDirectory(dir=a.workdir) as work:
        result = run(a.examples, a.seq, a.batch, a.rounds, work, a.pin)
    meta = {"tag": a.tag, "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "device": f"CPU {platform.machine()}, {os.cpu_count()} cores", "torch": torch.__version__,
            "command": " ".join(["python -m benchmarks.cache", *(argv if argv is not None else sys.argv[1:])]),
            "seq": a.seq, "batch": a.batch}
    res = {"meta": meta, "result": result}
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"cache_read_{a.tag}.json").write_text(json.dumps(res, indent=1))
    text = report(res)
    (out / f"cache_read_{a.tag}.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
