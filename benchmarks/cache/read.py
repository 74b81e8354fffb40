"""Does reading the boundary beat recomputing the prefix here? Disk-cache read throughput vs the prefix's tokens/s, side by side.

One process, one model (the cpu-small preset's shape: L=12, H=512, k=6, fp32 on CPU): the frozen prefix
runs on [batch, seq] batches (tokens/s), boundary rows are written to a DiskCache (random values but
for the first batch: a read costs the same whatever the bytes), and the collator's
read path (index lookup + memory-mapped rows + batch assembly, what a cache hit costs the data loader)
reads them back, twice: with the shard files dropped from the page cache first (POSIX_FADV_DONTNEED on
the clean files, then a fresh DiskCache; the kernel may still keep some pages, so this is an upper
bound on a truly cold read), and again warm (page cache). Rounds alternate prefix and reads so load
from other processes hits both alike. Writes benchmarks/results/cache_read_<tag>.json and .md.

Usage:
    python -m benchmarks.cache                       # a few minutes on 2 busy CPU cores
    python -m benchmarks.cache --examples 512 --tag cpu-big
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[2]  # the repository (benchmarks/cache/read.py)


def _model(layers=12, hidden=512, inter=1376, heads=8, vocab=8192):
    import transformers

    from fastfreeze._hf_compat import set_attn_implementation

    cfg = transformers.LlamaConfig(num_hidden_layers=layers, hidden_size=hidden, intermediate_size=inter,
                                   num_attention_heads=heads, num_key_value_heads=heads, vocab_size=vocab,
                                   max_position_embeddings=4096)
    torch.manual_seed(0)
    model = transformers.LlamaForCausalLM(cfg)
    set_attn_implementation(model, "sdpa")
    return model


def _drop_page_cache(path: str) -> None:
    for fn in os.listdir(path):
        if fn.endswith(".bin"):
            fd = os.open(os.path.join(path, fn), os.O_RDONLY)
            try:
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            finally:
                os.close(fd)


def _read_pass(cache_dir, fp, batches, hidden) -> float:
    """Seconds for the collator's read path over every batch (fresh DiskCache: new maps, no crc pass)."""
    from fastfreeze.cache import DiskCache
    from fastfreeze.cache.collator import assemble

    cache = DiskCache(cache_dir, fp, readonly=True)
    for shard in cache._shards.values():  # written and verified by this process: skip the crc read
        shard.verified = True
    start = time.perf_counter()
    for seg in batches:
        rows = cache.get_many(seg.keys)
        assert all(r is not None for r in rows)
        out = assemble(rows, seg, hidden, torch.float32)
        out.sum()  # touch every byte, as the host-to-device copy would
    return time.perf_counter() - start


def run(examples: int, seq: int, batch: int, k: int, rounds: int, workdir: str, prefix_batches: int = 2) -> dict:
    from fastfreeze import FreezeConfig, apply_freeze
    from fastfreeze.cache import DiskCache
    from fastfreeze.cache.segments import segment_batch
    from fastfreeze.estimate.flops import prefix_flops
    from fastfreeze.estimate.shape import ModelShape

    model = _model().eval()
    prefix = apply_freeze(model, FreezeConfig(num_frozen_layers=k)).prefix
    g = torch.Generator().manual_seed(1)
    ids = [torch.randint(1, 8192, (batch, seq), generator=g) for _ in range(examples // batch)]
    segs = [segment_batch(x) for x in ids]
    cache = DiskCache(workdir, "bench", dtype=torch.float32)
    for i, seg in enumerate(segs):
        # A read costs the same whatever the bytes are, so the rows are random (computing them all
        # would take the prefix minutes on a busy CPU); the first batch is the real boundary.
        rows = prefix.compute_boundary(input_ids=ids[0]) if i == 0 else torch.randn(batch, seq, 512, generator=g)
        cache.put_many(seg.keys, list(rows))
    cache.flush()
    prefix_s, cold_s, warm_s = [], [], []
    for _ in range(rounds):  # interleaved, so other processes' load falls on both sides alike
        start = time.perf_counter()
        for x in ids[:prefix_batches]:  # a rate: a few batches suffice, the reads cover every row
            prefix.compute_boundary(input_ids=x)
        prefix_s.append((time.perf_counter() - start) * len(ids) / min(prefix_batches, len(ids)))
        _drop_page_cache(cache.path)
        cold_s.append(_read_pass(workdir, "bench", segs, 512))
        warm_s.append(_read_pass(workdir, "bench", segs, 512))
    tokens = examples // batch * batch * seq
    shape = ModelShape("cpu-small", 12, 512, 1376, 8, 8, 8192, seq, batch, "float32")
    med = statistics.median
    out = {"tokens_per_pass": tokens, "bytes_per_pass": cache.nbytes, "rounds": rounds,
           "prefix_tokens_per_s": tokens / med(prefix_s), "cold_read_tokens_per_s": tokens / med(cold_s),
           "warm_read_tokens_per_s": tokens / med(warm_s), "cold_read_GBps": cache.nbytes / med(cold_s) / 1e9,
           "warm_read_GBps": cache.nbytes / med(warm_s) / 1e9,
           "prefix_achieved_flops": prefix_flops(shape, k) * tokens / med(prefix_s),
           "prefix_batches": min(prefix_batches, len(ids)), "seconds": {"prefix (scaled to a pass)": prefix_s, "cold_read": cold_s, "warm_read": warm_s}}
    out["cold_read_vs_prefix"] = out["cold_read_tokens_per_s"] / out["prefix_tokens_per_s"]
    out["warm_read_vs_prefix"] = out["warm_read_tokens_per_s"] / out["prefix_tokens_per_s"]
    return out


def report(res: dict) -> str:
    m, r = res["meta"], res["result"]
    return "\n".join([
        f"## Cache read vs prefix recompute ({m['tag']})", "",
        f"{m['date']} · {m['device']} · torch {m['torch']} · `{m['command']}`", "",
        f"Model: {m['shape']}. {r['tokens_per_pass']:,} tokens per pass ({r['bytes_per_pass'] / 2**20:.0f} MiB of "
        f"boundaries), median of {r['rounds']} interleaved rounds. Shared machine: other processes ran beside it; "
        "the ratios are measured side by side in one process.", "",
        "| path | tokens/s | GB/s | vs prefix |", "|---|---|---|---|",
        f"| prefix recompute (k={m['k']} blocks, no grad) | {r['prefix_tokens_per_s']:,.0f} | - | 1.00 |",
        f"| disk cache read, page cache dropped | {r['cold_read_tokens_per_s']:,.0f} | {r['cold_read_GBps']:.2f} | "
        f"{r['cold_read_vs_prefix']:.1f}x |",
        f"| disk cache read, page cache warm | {r['warm_read_tokens_per_s']:,.0f} | {r['warm_read_GBps']:.2f} | "
        f"{r['warm_read_vs_prefix']:.1f}x |", "",
        f"Prefix achieved {r['prefix_achieved_flops'] / 1e9:.1f} GFLOP/s (FLOP model x tokens/s): the `--flops` to give "
        "`fastfreeze estimate` for this machine.", ""])


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--examples", type=int, default=256)
    p.add_argument("--seq", type=int, default=256)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--k", type=int, default=6)
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--prefix-batches", type=int, default=2, help="batches the prefix is timed on per round")
    p.add_argument("--tag", default="cpu")
    p.add_argument("--workdir", default=None, help="where the cache shards go (default: a temporary directory)")
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    a = p.parse_args(argv)
    with tempfile.TemporaryDirectory(dir=a.workdir) as work:
        result = run(a.examples, a.seq, a.batch, a.k, a.rounds, work, a.prefix_batches)
    meta = {"tag": a.tag, "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "device": f"CPU {platform.machine()}, {os.cpu_count()} cores, torch threads {torch.get_num_threads()}",
            "torch": torch.__version__, "k": a.k, "command": "python -m benchmarks.cache " + " ".join(argv or sys.argv[1:]),
            "shape": f"L=12 H=512 I=1376 heads 8/8 V=8192 fp32, batch {a.batch} x seq {a.seq}"}
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
