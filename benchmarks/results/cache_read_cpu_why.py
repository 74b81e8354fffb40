"""Why the first cache read benchmark said 0.05 GB/s: the old and new read path at 1 vs 2 torch threads, same bytes, one process (cache_read_cpu_NOTES.md)."""
import os, sys, time, tempfile, statistics, torch
from fastfreeze.cache import DiskCache
from fastfreeze.cache.segments import segment_batch
from fastfreeze.cache.collator import assemble
def old_assemble(rows, seg, hidden, dtype):
    b, t = seg.shape
    out = torch.zeros(b * t, hidden, dtype=dtype)
    out.index_copy_(0, torch.cat(list(seg.index)), torch.cat([r.to(dtype) for r in rows]))
    return out.view(b, t, hidden)
g = torch.Generator().manual_seed(1)
ids = [torch.randint(1, 8192, (8, 256), generator=g) for _ in range(32)]
segs = [segment_batch(x) for x in ids]
work = tempfile.mkdtemp(dir="/tmp")
c = DiskCache(work, "bench", dtype=torch.float32)
for s in segs:
    c.put_many(s.keys, list(torch.randn(8, 256, 512, generator=g)))
c.flush()
def rp(fn, touch):
    cache = DiskCache(work, "bench", readonly=True)
    for sh in cache._shards.values(): sh.verified = True
    t0 = time.perf_counter()
    for s in segs:
        out = fn(cache.get_many(s.keys), s, 512, torch.float32)
        if touch: out.sum()
    return c.nbytes / (time.perf_counter() - t0) / 1e9
for threads in (1, 2):
    torch.set_num_threads(threads)
    for name, fn, touch in (("old+sum", old_assemble, True), ("old", old_assemble, False), ("new", assemble, False)):
        r = [rp(fn, touch) for _ in range(5)]
        print(f"threads {threads} {name:8s} GB/s median {statistics.median(r):.2f} min {min(r):.2f} max {max(r):.2f}", flush=True)
import shutil; shutil.rmtree(work)
