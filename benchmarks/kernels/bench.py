"""Benchmark csrc_triton ops against torch eager, torch.compile and Liger-Kernel (bf16, CUDA).

Usage: ``python -m benchmarks.kernels [--out benchmarks/results] [--quick]``
       ``TRITON_INTERPRET=1 python -m benchmarks.kernels --rehearse --out /tmp/r``  (CPU, toy shapes)

Reports median time (triton.testing.do_bench), achieved GB/s of the bytes each op must move, that
bandwidth as a fraction of the measured device copy bandwidth (x -> y copy), and peak memory above
the inputs. Writes JSON (device, versions, date, git commit) and a markdown table to --out, and
prints the table plus the issue's targets as PASS/FAIL. On a machine without CUDA it says so and exits 0,
unless --rehearse: then the same code runs on CPU at toy shapes (kernels under the Triton interpreter,
wall-clock medians instead of do_bench, peak memory from benchmarks.memtrack), to prove the script
end to end; those numbers say nothing about a GPU.
"""
from __future__ import annotations

import argparse
import datetime as _dt
import os
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[2]


from benchmarks.kernels.providers import _liger, providers
from fastfreeze import _io
from fastfreeze._hf_compat import raise_recompile_limit


# ---------------------------------------------------------------- measurement
def _peak_mb(fn) -> float:
    if not torch.cuda.is_available():  # rehearsal on CPU: device-independent tensor accounting
        from benchmarks.memtrack import MemTracker

        with MemTracker() as mt:
            fn()
        return mt.report()["peak_bytes"] / 2**20
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    fn()
    torch.cuda.synchronize()
    return (torch.cuda.max_memory_allocated() - base) / 2**20


def _cpu_bench(fn, grads, reps=2) -> float:
    """Median wall time in ms of `reps` calls (rehearsal only: the interpreter's speed means nothing)."""
    times = []
    for _ in range(reps):
        for t in grads:
            t.grad = None
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
    return sorted(times)[len(times) // 2]


def _bench(fn, grads, rep_ms):
    for t in grads:
        t.grad = None
    peak = _peak_mb(fn)
    if not torch.cuda.is_available():
        return _cpu_bench(fn, grads), peak
    from triton.testing import do_bench

    ms = do_bench(fn, warmup=max(25, rep_ms // 4), rep=rep_ms, grad_to_none=grads, return_mode="median")
    return ms, peak


def copy_bandwidth_gbps(dev) -> float:
    """Device copy bandwidth: bytes read + written by a 1 GiB x -> y copy."""
    x = torch.empty(2**29 if dev.type == "cuda" else 2**22, dtype=torch.bfloat16, device=dev).normal_()
    y = torch.empty_like(x)
    if dev.type != "cuda":
        ms = _cpu_bench(lambda: y.copy_(x), [], reps=5)
    else:
        from triton.testing import do_bench

        ms = do_bench(lambda: y.copy_(x), warmup=25, rep=200, return_mode="median")
    return 2 * x.numel() * x.element_size() / (ms * 1e-3) / 1e9


def case_inputs(op, hidden, tokens, dev, train):
    bf = torch.bfloat16
    if op == "rms_norm":
        x = torch.randn(tokens, hidden, device=dev, dtype=bf, requires_grad=train)
        w = (1 + 0.1 * torch.randn(hidden, device=dev)).to(bf).requires_grad_(train)
        return (x, w), [x, w]
    if op == "swiglu":
        g = torch.randn(tokens, hidden, device=dev, dtype=bf, requires_grad=train)
        u = torch.randn(tokens, hidden, device=dev, dtype=bf, requires_grad=train)
        return (g, u), [g, u]
    if op == "rope":
        head_dim, n_heads = 128, hidden // 128
        batch, seq = max(1, tokens // 4096), min(tokens, 4096)
        q = torch.randn(batch, seq, n_heads, head_dim, device=dev, dtype=bf).transpose(1, 2)
        k = torch.randn(batch, seq, max(1, n_heads // 4), head_dim, device=dev, dtype=bf).transpose(1, 2)
        q, k = q.detach().requires_grad_(train), k.detach().requires_grad_(train)
        pos = torch.arange(seq, device=dev).float()
        inv = 1.0 / (500000 ** (torch.arange(0, head_dim, 2, device=dev).float() / head_dim))
        emb = torch.cat([pos[:, None] * inv] * 2, dim=-1)[None].expand(batch, seq, head_dim)
        return (q, k, emb.cos().to(bf), emb.sin().to(bf)), [q, k]
    raise ValueError(op)


def run_elementwise(op, hidden, tokens, dev, args, copy_gbps, rows):
    for train in (False, True):
        inputs, leaves = case_inputs(op, hidden, tokens, dev, train)
        # Bytes the op cannot avoid moving, in units of one activation (rope: q and k together):
        # rms_norm fwd x->y (2), bwd x,dy->dx (+3); swiglu fwd g,u->y (3), bwd dy,g,u->dg,du (+5);
        # rope fwd q,k->q',k' (2), bwd dq',dk'->dq,dk (+2). The norm weight is negligible.
        act = leaves[0].numel() * leaves[0].element_size()
        if op == "rope":
            act += leaves[1].numel() * leaves[1].element_size()
        nbytes = act * {"rms_norm": (2, 5), "swiglu": (3, 8), "rope": (2, 4)}[op][int(train)]
        ref_out = None
        for name, fn in providers(op, hidden, dev, not args.no_compile).items():
            row = {"op": op, "mode": "fwd+bwd" if train else "fwd", "hidden": hidden, "tokens": tokens,
                   "provider": name}
            try:
                if train:
                    outs = fn(*inputs)
                    outs = outs if isinstance(outs, tuple) else (outs,)
                    dys = [torch.randn_like(o) for o in outs]

                    def step(fn=fn, dys=dys, inputs=inputs):
                        o = fn(*inputs)
                        torch.autograd.backward(o if isinstance(o, tuple) else (o,), dys)
                else:
                    def step(fn=fn, inputs=inputs):
                        with torch.no_grad():
                            return fn(*inputs)
                with torch.no_grad():
                    res = fn(*[t.detach() for t in inputs])
                first = res[0] if isinstance(res, tuple) else res
                if ref_out is None:
                    ref_out = first.float()
                row["max_abs_diff_vs_fastfreeze"] = (first.float() - ref_out).abs().max().item()
                ms, peak = _bench(step, leaves if train else [], args.rep_ms)
                gbps = nbytes / (ms * 1e-3) / 1e9
                row.update(ms=ms, gbps=gbps, frac_copy=gbps / copy_gbps, peak_mb=peak)
            except Exception as e:  # a baseline that fails (API drift, OOM) is recorded, not fatal
                row["error"] = f"{type(e).__name__}: {str(e)[:200]}"
            rows.append(row)
            _print_row(row)
        del inputs, leaves
        _empty_cache()


def run_lce(dev, args, rows, tokens, hidden=4096, vocab=128256):
    bf = torch.bfloat16
    h0 = torch.randn(tokens, hidden, device=dev, dtype=bf)
    w0 = (torch.randn(vocab, hidden, device=dev) / hidden**0.5).to(bf)
    labels = torch.randint(0, vocab, (tokens,), device=dev)
    labels[::7] = -100
    for head_trainable in (True, False):
        h = h0.clone().requires_grad_()
        w = w0.clone().requires_grad_(head_trainable)
        ref_loss = None
        for name, fn in providers("linear_cross_entropy", hidden, dev, False).items():
            row = {"op": "linear_cross_entropy", "mode": "fwd+bwd" + ("" if head_trainable else " (frozen head)"),
                   "hidden": hidden, "tokens": tokens, "vocab": vocab, "provider": name}
            try:
                def step(fn=fn):
                    fn(h, w, labels).backward()
                loss = fn(h, w, labels).detach().float().item()
                ref_loss = loss if ref_loss is None else ref_loss
                row["loss_diff_vs_fastfreeze"] = abs(loss - ref_loss)
                ms, peak = _bench(step, [h, w], max(args.rep_ms, 1000))
                row.update(ms=ms, peak_mb=peak)
            except Exception as e:
                row["error"] = f"{type(e).__name__}: {str(e)[:200]}"
            rows.append(row)
            _print_row(row)
            _empty_cache()


def _empty_cache() -> None:
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


# ---------------------------------------------------------------- reporting
def _print_row(r):
    if "error" in r:
        print(f"  {r['op']:>20} {r['mode']:<22} H={r['hidden']:<5} N={r['tokens']:<6} {r['provider']:<18} ERROR {r['error']}")
        return
    bw = f"{r['gbps']:7.0f} GB/s {100 * r['frac_copy']:5.1f}% copy" if "gbps" in r else ""
    print(f"  {r['op']:>20} {r['mode']:<22} H={r['hidden']:<5} N={r['tokens']:<6} {r['provider']:<18} "
          f"{r['ms']:8.3f} ms {bw} peak {r['peak_mb']:8.1f} MiB", flush=True)


def markdown(rows, meta) -> str:
    lines = [f"# bench_kernels: {meta['device']} ({meta['date']}, torch {meta['torch']}, triton {meta['triton']}, "
             f"commit {meta['git_commit'][:10]})", "", f"Copy bandwidth: {meta['copy_gbps']:.0f} GB/s", "",
             "| op | mode | hidden | tokens | provider | ms (median) | GB/s | % of copy | peak MiB |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['op']} | {r['mode']} | {r['hidden']} | {r['tokens']} | {r['provider']} | error: "
                         f"{r['error'][:60]} | | | |")
            continue
        gb = f"{r['gbps']:.0f}" if "gbps" in r else ""
        fr = f"{100 * r['frac_copy']:.1f}" if "frac_copy" in r else ""
        lines.append(f"| {r['op']} | {r['mode']} | {r['hidden']} | {r['tokens']} | {r['provider']} | {r['ms']:.3f} | "
                     f"{gb} | {fr} | {r['peak_mb']:.1f} |")
    return "\n".join(lines)


def _get(rows, op, mode, provider, **kw):
    for r in rows:
        if (r["op"], r["mode"], r["provider"]) == (op, mode, provider) and "ms" in r and \
                all(r.get(k) == v for k, v in kw.items()):
            return r
    return None


def evaluate_targets(rows):
    """The issue's targets, each with the numbers it was judged on; None where a baseline is missing."""
    out = []
    for r in rows:
        if r["provider"] == "fastfreeze" and r["mode"] == "fwd" and r["op"] in ("rms_norm", "swiglu") and "ms" in r:
            out.append({"target": f"{r['op']} fwd >= 85% copy (H={r['hidden']}, N={r['tokens']})",
                        "value": r["frac_copy"], "pass": r["frac_copy"] >= 0.85})
        if r["provider"] == "fastfreeze" and r["op"] == "rms_norm" and r["mode"] == "fwd+bwd" and "ms" in r:
            for base in ("torch.compile(hf)", "liger"):
                b = _get(rows, "rms_norm", "fwd+bwd", base, hidden=r["hidden"], tokens=r["tokens"])
                if b is not None:
                    out.append({"target": f"rms_norm fwd+bwd faster than {base} (H={r['hidden']}, N={r['tokens']})",
                                "value": r["ms"] / max(b["ms"], 1e-9), "pass": r["ms"] < b["ms"]})
        if r["provider"] == "fastfreeze" and r["op"] == "linear_cross_entropy" and r["mode"] == "fwd+bwd" and "ms" in r:
            b = _get(rows, "linear_cross_entropy", "fwd+bwd", "hf_loss_path", tokens=r["tokens"])
            if b is not None:
                out.append({"target": f"FLCE peak memory <= 10% of HF (N={r['tokens']})",
                            "value": r["peak_mb"] / max(b["peak_mb"], 1e-9), "pass": r["peak_mb"] <= 0.10 * b["peak_mb"]})
                out.append({"target": f"FLCE time <= 1.1x HF (N={r['tokens']})",
                            "value": r["ms"] / max(b["ms"], 1e-9), "pass": r["ms"] <= 1.1 * b["ms"]})
    return out


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="python -m benchmarks.kernels", description=__doc__.splitlines()[0])
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results"), help="output folder")
    p.add_argument("--quick", action="store_true", help="hidden 4096 only, 4096 tokens, no LCE at 16384")
    p.add_argument("--no-compile", action="store_true", help="skip the torch.compile baselines")
    p.add_argument("--rep-ms", type=int, default=100, help="do_bench measuring time per case (ms)")
    p.add_argument("--ops", default="rms_norm,swiglu,rope,linear_cross_entropy")
    p.add_argument("--budget-s", type=float, default=165.0,
                   help="skip remaining elementwise cases (recorded as skipped) once this many seconds have passed")
    p.add_argument("--rehearse", action="store_true",
                   help="CPU, toy shapes, kernels interpreted (needs TRITON_INTERPRET=1): proves the script, not a GPU")
    return p.parse_args(argv)


def _meta(dev, rehearse: bool) -> dict:
    import triton

    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    except OSError:
        commit = ""
    name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else "CPU rehearsal (Triton interpreter)"
    return {"device": name, "torch": torch.__version__, "triton": triton.__version__,
            "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"), "git_commit": commit or "unknown",
            "liger": _liger() is not None, "dtype": "bfloat16", "rehearsal": rehearse}


def run_all(dev, args, meta, t0) -> list[dict]:
    """LCE first (its memory target must be measured whatever the budget), then the elementwise ops."""
    ops = [o.strip() for o in args.ops.split(",") if o.strip()]
    rows: list[dict] = []
    if "linear_cross_entropy" in ops:
        if args.rehearse:
            run_lce(dev, args, rows, tokens=64, hidden=64, vocab=512)
        else:
            run_lce(dev, args, rows, tokens=4096 if args.quick else 16384)
    if args.rehearse:
        cases = [(256, 64)]
    else:
        cases = [(4096, 4096)] if args.quick else [(2048, 16384), (4096, 16384), (8192, 16384), (4096, 4096)]
    for op in ("rms_norm", "swiglu", "rope"):
        if op not in ops:
            continue
        for hidden, tokens in cases:
            if op != "rms_norm" and tokens != cases[0][1]:
                continue  # extra token count only for the norm (its targets)
            if time.time() - t0 > args.budget_s:
                rows.append({"op": op, "mode": "-", "hidden": hidden, "tokens": tokens, "provider": "-",
                             "error": f"skipped: past --budget-s {args.budget_s}"})
                continue
            run_elementwise(op, hidden, tokens, dev, args, meta["copy_gbps"], rows)
    return rows


def write(rows, meta, out: Path) -> str:
    targets = evaluate_targets(rows)
    out.mkdir(parents=True, exist_ok=True)
    slug = "".join(c if c.isalnum() else "_" for c in meta["device"]).strip("_").lower()
    stem = f"bench_kernels_{slug}_{meta['date'][:10]}"
    md = markdown(rows, meta)
    md += "\n\n## Targets\n\n" + "\n".join(
        f"- {'PASS' if t['pass'] else 'FAIL'}: {t['target']} (value {t['value']:.3f})" for t in targets) + "\n"
    _io.write_json(out / f"{stem}.json", {"meta": meta, "results": rows, "targets": targets}, indent=1)
    _io.write_text(out / f"{stem}.md", md)
    print("\n" + md)
    return str(out / f"{stem}.json")


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.rehearse:
        if os.environ.get("TRITON_INTERPRET") != "1":
            raise SystemExit("--rehearse runs the kernels under Triton's interpreter: set TRITON_INTERPRET=1")
        dev = torch.device("cpu")
    elif not torch.cuda.is_available():
        print("bench_kernels needs a CUDA GPU (Triton kernels); none found here, nothing measured.")
        return 0
    else:
        os.environ.pop("TRITON_INTERPRET", None)
        dev = torch.device("cuda")
        torch.backends.cuda.matmul.allow_tf32 = False
    t0 = time.time()
    meta = _meta(dev, args.rehearse)
    meta["copy_gbps"] = copy_bandwidth_gbps(dev)
    print(f"device {meta['device']}, copy bandwidth {meta['copy_gbps']:.0f} GB/s", flush=True)
    # Each static torch.compile shape is a recompile of the same function: raise dynamo's limit so
    # the compiled baseline never silently falls back to eager.
    raise_recompile_limit(64)
    rows = run_all(dev, args, meta, t0)
    meta["seconds"] = round(time.time() - t0, 1)
    path = write(rows, meta, Path(args.out))
    print(f"bench_kernels: {meta['seconds']} s; wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
