"""Device-independent memory accounting of bench_train's arms: bytes saved for backward and peak live activation bytes, measured vs the analytic model.

Usage:
    python -m benchmarks.memory --out benchmarks/results            # both kernel sets, writes memory_<preset>.md/.json
    python -m benchmarks.memory --kernels torch --preset mem-toy    # quick

Each arm trains 2 steps of the same bf16 model the way bench_train builds it; step 2's forward and backward
run under `benchmarks.memtrack.MemTracker`: bytes autograd saved (saved_tensors_hooks), live bytes at
the end of the forward (everything held for backward, including what checkpointing keeps), and the peak
of live tensor bytes over forward + backward without parameter gradients. `--kernels triton` forces the
Triton kernel set (the GPU one) under TRITON_INTERPRET=1, for the FastFreeze arms with the fused loss on
and off. `benchmarks.memory.model` predicts the same quantities from the shapes; the report sets them side by side.
"""
from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import sys
import tempfile
from pathlib import Path

from fastfreeze import _io

ROOT = Path(__file__).resolve().parents[2]
ARMS = ("naive", "ff", "ff-warm", "floor")


def _presets():
    from benchmarks.train import presets as tp

    def mk(name, **kw):
        base = dict(layers=16, hidden=64, intermediate=256, heads=4, kv_heads=1, vocab=4008, seq=64, batch=2,
                    dtype="bfloat16", k=8, examples=8, schedule=tp.Schedule(warmup=2, rounds=0, window=1),
                    sweep_schedule=tp.Schedule(warmup=2, rounds=0, window=1))
        return tp.Preset(name=name, **{**base, **kw})

    # gpu-1b's proportions (I = 4H, V ~ 62.6 H, 4 query heads per KV head, k = L/2) at a size the CPU
    # interpreter runs in seconds; mem-toy is smaller still, for tests.
    return {"mem-1b": mk("mem-1b"), "mem-toy": mk("mem-toy", layers=4, k=2, vocab=1002, seq=32)}


def measure(preset, kernels: str, arms, fused_modes, log=print) -> list[dict]:
    import torch

    from benchmarks.memtrack import StepProbe
    from benchmarks.train import arms as ta
    from benchmarks.train import presets as tp
    from benchmarks.train import roundrobin as rr

    rows = []
    with tempfile.TemporaryDirectory() as wd:
        for ckpt in (False, True):
            for kind in arms:
                for fused in (fused_modes if kind.startswith("ff") else (None,)):
                    spec = tp.ArmSpec(kind=kind, k=preset.k, ckpt=ckpt)
                    ctx = tp.BenchContext(preset, torch.device("cpu"), wd, kernels=kernels if kind.startswith("ff")
                                          else "torch", fused_loss=bool(fused), step_probe=StepProbe(1))
                    res = ta.run_arm(spec, ctx, rr.StepHook(ctx.device))
                    rep = res.get("memory_step")
                    if rep is None:
                        raise RuntimeError(f"{spec.name}: the memory probe did not run (no step 2)")
                    rows.append({"kind": kind, "k": spec.k, "ckpt": ckpt, "kernels": res.get("kernel_set", "torch"),
                                 "fused_loss": fused, **rep, "losses": res["losses"]})
                    log(f"[bench_memory] {spec.name} {kernels} fused={fused}: saved {rep['saved_bytes'] / 2**20:.3f} MiB, "
                        f"held at forward end {rep['live_at'].get('forward', 0) / 2**20:.3f} MiB, "
                        f"peak {rep['peak_activation_bytes'] / 2**20:.3f} MiB")
    return rows


def add_model(rows: list[dict], preset) -> None:
    from benchmarks.memory import model as mem_model

    for r in rows:
        b, t = r["batch_shape"]
        r["predicted"] = mem_model.predict(preset, r["kind"], r["k"], r["ckpt"], bool(r["fused_loss"]), r["kernels"],
                                           batch=b, seq=t)


def _mib(v) -> str:
    return "-" if v is None else f"{v / 2**20:.3f}"


def _naive(rows, r):
    return next((n for n in rows if n["kind"] == "naive" and n["ckpt"] == r["ckpt"]), None)


def markdown(result: dict) -> str:
    m = result["meta"]
    lines = [f"## Memory accounting `{m['preset']}` (device-independent)", "",
             f"{m['date']} · {m['device']} · torch {m['torch']} · transformers {m['transformers']} · commit "
             f"`{m['commit']}` · {m['seconds']:.0f} s", f"`{m['command']}`", "",
             f"Model: {m['shape']}. Step 2 of each arm; bytes counted from tensors (benchmarks/memtrack.py), "
             "predictions from benchmarks/memory/model.py.", "",
             "| arm | ckpt | kernels | fused loss | saved (MiB) | predicted | held at fwd end (MiB) | predicted | "
             "peak activations (MiB) | saved / naive | held / naive | peak / naive |", "|" + "---|" * 12]
    for r in result["arms"]:
        n, p = _naive(result["arms"], r), r.get("predicted", {})
        ratio = (lambda key, sub=None: "-" if n is None else
                 f"{(r[key] if sub is None else r[key][sub]) / max(1, n[key] if sub is None else n[key][sub]):.2f}")
        lines.append(f"| {r['kind']} | {'on' if r['ckpt'] else 'off'} | {r['kernels']} | "
                     f"{'-' if r['fused_loss'] is None else ('on' if r['fused_loss'] else 'off')} | "
                     f"{_mib(r['saved_bytes'])} | {_mib(p.get('saved_bytes'))} | {_mib(r['live_at'].get('forward'))} | "
                     f"{_mib(p.get('held_bytes'))} | {_mib(r['peak_activation_bytes'])} | {ratio('saved_bytes')} | "
                     f"{ratio('live_at', 'forward')} | {ratio('peak_activation_bytes')} |")
    worst = max(max(abs(r["saved_bytes"] - r["predicted"]["saved_bytes"]),
                    abs(r["live_at"].get("forward", 0) - r["predicted"]["held_bytes"])) for r in result["arms"])
    lines += ["", f"Measured vs predicted: largest difference {worst:.0f} bytes over {len(result['arms'])} arms "
              "(saved and held). Peak activations (forward + backward, gradients excluded) are measured only.", ""]
    return "\n".join(lines + gpu_predictions()) + "\n"


GPU_ARMS = (("naive", "torch", False), ("ff-warm", "torch", False), ("ff-warm", "triton", False),
            ("ff-warm", "triton", True), ("ff", "triton", True))


def gpu_predictions() -> list[str]:
    """The analytic model at the GPU presets' shapes (full-length rows): predictions, not measurements."""
    from benchmarks.memory import model as mem_model
    from benchmarks.train import presets as tp

    lines = ["### Predicted at the GPU presets' shapes (analytic model, full-length rows; not measured)", "",
             "| preset | arm | kernels | fused loss | ckpt | saved (GiB) | held at fwd end (GiB) | held / naive |",
             "|---|---|---|---|---|---|---|---|"]
    for name in ("gpu-1b", "gpu-8b-slice"):
        p = tp.PRESETS[name]
        for ckpt in (False, True):
            base = mem_model.predict(p, "naive", p.k, ckpt, False)["held_bytes"]
            for kind, kernels, fused in GPU_ARMS:
                r = mem_model.predict(p, kind, p.k, ckpt, fused, kernels)
                lines.append(f"| {name} | {kind} | {kernels} | {'on' if fused else 'off'} | {'on' if ckpt else 'off'} | "
                             f"{r['saved_bytes'] / 2**30:.2f} | {r['held_bytes'] / 2**30:.2f} | {r['held_bytes'] / base:.2f} |")
    return lines


def _cpu_name() -> str:
    info = Path("/proc/cpuinfo")
    lines = info.read_text().splitlines() if info.exists() else []
    return next((ln.split(":", 1)[1].strip() for ln in lines if ln.startswith("model name")), "")


def _meta(argv, preset, seconds) -> dict:
    import platform
    import subprocess

    import torch
    import transformers

    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                            text=True).stdout.strip() or "unknown"
    return {"preset": preset.name, "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "device": f"CPU {_cpu_name() or platform.machine()}, {os.cpu_count()} cores",
            "torch": torch.__version__, "transformers": transformers.__version__, "commit": commit,
            "command": "python -m benchmarks.memory " + " ".join(argv), "seconds": seconds,
            "shape": f"L={preset.layers} k={preset.k} H={preset.hidden} I={preset.intermediate} heads "
                     f"{preset.heads}/{preset.kv_heads} V={preset.vocab} T<={preset.seq} B={preset.batch} {preset.dtype}"}


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    p = argparse.ArgumentParser(prog="python -m benchmarks.memory", description=__doc__.split("\n")[0])
    p.add_argument("--preset", default="mem-1b", choices=sorted(_presets()))
    p.add_argument("--kernels", default="both", choices=("both", "torch", "triton"))
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--report", default=None, metavar="JSON", help="re-render the markdown from a results JSON")
    args = p.parse_args(argv)
    if args.report:
        result = json.loads(Path(args.report).read_text())
        md = markdown(result)
        _io.write_text(Path(args.report).with_suffix(".md"), md)
        print(md)
        return 0
    if args.kernels != "torch":
        if "triton" in sys.modules and os.environ.get("TRITON_INTERPRET") != "1":
            raise SystemExit("triton was imported before TRITON_INTERPRET=1 could be set; run in a fresh process")
        os.environ["TRITON_INTERPRET"] = "1"  # the GPU kernel set, interpreted on CPU tensors
    import time

    import torch

    torch.set_num_threads(args.threads)
    preset = _presets()[args.preset]
    t0 = time.perf_counter()
    rows = []
    if args.kernels in ("both", "torch"):
        rows += measure(preset, "torch", ARMS, (True,))
    if args.kernels in ("both", "triton"):
        rows += measure(preset, "triton", ("ff", "ff-warm"), (True, False))
    add_model(rows, preset)
    result = {"meta": _meta(argv, preset, time.perf_counter() - t0), "arms": rows}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    _io.write_json(out / f"memory_{preset.name}.json", result, indent=1)
    md = markdown(result)
    _io.write_text(out / f"memory_{preset.name}.md", md)
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
