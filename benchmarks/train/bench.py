"""End-to-end training benchmark: FastFreeze against full fine-tuning, naive freezing (+ Liger) and the suffix-only floor.

Usage:
    python -m benchmarks.train --preset cpu-small --out benchmarks/results
    python -m benchmarks.train --preset gpu-1b --out "$OUT" --arms naive,liger,ff,ff-warm,floor
    python -m benchmarks.train --report benchmarks/results/bench_train_cpu-small.json   # re-render only

All arms train the same random-init Llama-shaped model on the same fixed set of random-token examples
in the same order. Arms of a group run in one process, interleaved step windows (see
`benchmarks/train/roundrobin.py`); the k sweep runs one group per k. Reports median step time and tokens/s
(real, non-pad tokens) over the measured steps, peak memory (CUDA max allocated per arm; on CPU the
peak RSS growth of a fresh subprocess per arm), ratios against naive freezing at the same k and
checkpointing beside the FLOP model's prediction (benchmarks/train/flop_model.py), and every arm's final loss.
Writes bench_train_<preset>.json and .md to --out.
"""
from __future__ import annotations

import argparse
import datetime as _dt
import dataclasses
import json
import statistics
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from benchmarks.train import arms as ta
from benchmarks.train import presets as tp
from benchmarks.train import roundrobin as rr
from benchmarks.train.report import add_ratios, check_targets, extras, markdown
from fastfreeze import _io

ROOT = Path(__file__).resolve().parents[2]
MAIN_KINDS = ("full", "naive", "ff", "ff-warm", "ff-cold", "floor", "floor-loop")
SWEEP_KINDS = ("naive", "ff", "ff-warm")


# ------------------------------------------------------------------------------------------ environment
def _git_commit() -> str:
    if os.environ.get("BENCH_GIT_COMMIT"):  # set when running from a snapshot copy of the checkout
        return os.environ["BENCH_GIT_COMMIT"]
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, timeout=10)
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "fastfreeze", "benchmarks/train"], cwd=ROOT, capture_output=True, text=True, timeout=10)
        return out.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")
    except Exception:
        return "unknown"


def _versions() -> dict:

    out = {"python": sys.version.split()[0]}
    from importlib.metadata import version

    for name in ("torch", "transformers", "accelerate", "datasets", "triton", "liger-kernel", "fastfreeze"):
        try:
            out[name] = version(name)
        except Exception:
            out[name] = None
    return out


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    import platform

    model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("model name")), platform.processor()) if Path("/proc/cpuinfo").exists() else ""
    return f"CPU {model} ({os.cpu_count()} cores, torch threads {torch.get_num_threads()})"


def liger_status(device: torch.device) -> str | None:
    """None when the Liger arm can run, else why not."""
    try:
        import liger_kernel.transformers  # noqa: F401
    except Exception as err:
        return f"liger_kernel not importable ({type(err).__name__}); pip install liger-kernel to add the arm"
    if device.type != "cuda":
        return "Liger-Kernel's Triton kernels need a CUDA device"
    return None


def summarize_times(times: list[float], tokens: list[int], warmup: int) -> dict:
    """Median step time over the measured steps (after warm-up); tokens/s = mean real tokens per step / median."""
    measured = times[warmup:]
    toks = tokens[warmup:len(times)]
    out = {"measured_steps": len(measured)}
    if not measured:
        return out
    out["median_step_s"] = statistics.median(measured)
    out["min_step_s"], out["max_step_s"] = min(measured), max(measured)
    if len(toks) == len(measured):
        # Every arm sees the same batches, so tokens/s at the median step keeps tok/s ratios = 1 / step ratios.
        out["tokens_per_step"] = statistics.mean(toks)
        out["tokens_per_s"] = out["tokens_per_step"] / out["median_step_s"]
    return out


def spec_dict(spec: tp.ArmSpec) -> dict:
    return {**dataclasses.asdict(spec), "name": spec.name}


# ------------------------------------------------------------------------------------------ plan
def plan(preset: tp.Preset, kinds: list[str], k: int, ckpt_modes: list[bool], sweep_ks: list[int],
         liger_ok: bool) -> list[tuple[str, list[tp.ArmSpec], tp.Schedule]]:
    """Groups of arms, each measured round-robin in one process. Liger patches Llama classes process-wide,
    so its arms come last, in their own group."""
    groups = []
    for ckpt in ckpt_modes:
        specs = [tp.ArmSpec(kind, k, ckpt) for kind in MAIN_KINDS if kind in kinds]
        if specs:
            groups.append((f"main{'+ckpt' if ckpt else ''}", specs, preset.schedule))
    for ks in sweep_ks:
        if ks == k:
            continue
        specs = [tp.ArmSpec(kind, ks, False) for kind in SWEEP_KINDS if kind in kinds]
        if specs:
            groups.append((f"sweep k={ks}", specs, preset.sweep_schedule))
    if liger_ok and "liger" in kinds:
        groups.append(("liger (sequential, after all others)", [tp.ArmSpec("liger", k, c) for c in ckpt_modes],
                       preset.schedule))
    return groups


# ------------------------------------------------------------------------------------------ CPU memory probe
def _proc_status(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"{field} not in /proc/self/status")


def probe_memory(spec: tp.ArmSpec, ctx: tp.BenchContext) -> dict:
    """In a fresh process: peak RSS growth while building + training this arm for ctx.max_steps steps."""
    import gc

    # Lazy imports and one-time library set-up (Trainer, accelerate, datasets) would count as the arm's
    # memory: run the same arm on the toy preset first.
    toy = tp.BenchContext(tp.PRESETS["toy"], ctx.device, ctx.workdir, schedule=tp.Schedule(1, 0, 1))
    ta.run_arm(tp.ArmSpec(spec.kind, min(spec.k, 2), spec.ckpt), toy, rr.StepHook(ctx.device))
    gc.collect()
    try:
        Path("/proc/self/clear_refs").write_text("5")  # reset the RSS high-water mark to the current RSS
        method = "peak RSS - RSS before the arm (fresh subprocess, VmHWM reset)"
    except OSError:
        method = "peak RSS - RSS before the arm (fresh subprocess; VmHWM not resettable, includes imports)"
    base = _proc_status("VmRSS")
    res = ta.run_arm(spec, ctx, rr.StepHook(ctx.device))
    return {"peak_bytes": _proc_status("VmHWM") - base, "method": method, "steps": len(res["losses"])}


def run_probe_subprocess(spec: tp.ArmSpec, args) -> dict:
    cmd = [sys.executable, "-m", "benchmarks.train", "--preset", args.preset, "--probe", f"{spec.kind}:{spec.k}:{int(spec.ckpt)}",
           "--threads", "1", "--kernels", args.kernels, "--device", args.device]
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=args.probe_timeout, cwd=ROOT)
    except subprocess.TimeoutExpired:
        return {"error": f"memory probe timed out after {args.probe_timeout}s"}
    for line in out.stdout.splitlines()[::-1]:
        if line.startswith("PROBE "):
            return json.loads(line[6:])
    return {"error": f"memory probe failed (rc {out.returncode}): {out.stderr.strip()[-400:]}"}


# ------------------------------------------------------------------------------------------ run + report
def run_groups(groups, ctx_base: dict, args, on_group=None) -> list[dict]:
    """Run each group round-robin; `on_group(rows)` after each (partial results survive a timeout)."""
    rows = []
    for gname, specs, schedule in groups:
        print(f"[bench_train] group {gname}: {', '.join(s.name for s in specs)} "
              f"({schedule.warmup} warm-up + {schedule.rounds}x{schedule.window} measured steps)", flush=True)
        ctx = tp.BenchContext(schedule=schedule, **ctx_base)
        if getattr(args, "memory", None) == "tracker":  # device-independent: one warm-up step per arm
            from benchmarks.memtrack import StepProbe

            ctx.step_probe = StepProbe(max(0, schedule.warmup - 1))
        t0 = time.perf_counter()
        results = rr.RoundRobin(schedule).run(specs, ctx, ta.run_arm)
        for spec, res in zip(specs, results):
            row = {**spec_dict(spec), "group": gname, "schedule": vars(schedule), **res}
            if "error" not in res:
                row.update(summarize_times(res["step_times"], res.get("tokens", []), schedule.warmup))
                row["final_loss"] = res["losses"][-1] if res.get("losses") else None
                if res.get("peak_bytes_cuda") is not None:
                    row["peak_mem_bytes"], row["mem_method"] = res["peak_bytes_cuda"], "CUDA max_memory_allocated"
                elif res.get("memory_step"):
                    row["peak_mem_bytes"] = res["memory_step"]["peak_bytes"]
                    row["mem_method"] = "benchmarks.memtrack: peak live tensor bytes of one step (params excluded)"
            else:
                print(f"[bench_train]   {spec.name} FAILED: {res['error']}", flush=True)
            rows.append(row)
        print(f"[bench_train] group {gname} done in {time.perf_counter() - t0:.0f}s", flush=True)
        if on_group is not None:
            on_group(rows)
    return rows


# ------------------------------------------------------------------------------------------ main
def finish(result: dict, out: Path, preset: tp.Preset, k: int) -> str:
    """Ratios, targets and extras from the rows; write JSON + markdown atomically; return the markdown."""
    rows = result["arms"]
    add_ratios(rows, preset)
    result["targets"] = check_targets(rows, preset, k, result["meta"].get("targets"))
    result["extra"] = extras(rows, k)
    stem = f"bench_train_{preset.name}"
    _io.write_json(out / f"{stem}.json", result, indent=1, default=str)
    md = markdown(result)
    _io.write_text(out / f"{stem}.md", md)
    return md


def rerender(path: Path, preset: tp.Preset, k: int) -> int:
    if not path.exists():
        raise SystemExit(f"--report {path}: no such file; run python -m benchmarks.train first")
    result = json.loads(path.read_text())
    cfg = result["meta"]["config"]
    preset = tp.Preset(**{**cfg, "schedule": tp.Schedule(**cfg["schedule"]),
                          "sweep_schedule": tp.Schedule(**cfg["sweep_schedule"])})
    for r in result["arms"]:
        if "error" not in r:
            r.update(summarize_times(r["step_times"], r.get("tokens", []), r["schedule"]["warmup"]))
    print(finish(result, path.parent, preset, result["meta"]["k"]), flush=True)
    return 0


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="python -m benchmarks.train", description=__doc__.split("\n")[0])
    p.add_argument("--preset", default="cpu-small", choices=sorted(tp.PRESETS))
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    p.add_argument("--arms", default=",".join(ta.ARM_KINDS),
                   help="comma list of " + "; ".join(f"{k}: {v}" for k, v in ta.ARM_HELP.items()))
    p.add_argument("--k", type=int, default=None, help="frozen layers for the main groups (default: the preset's)")
    p.add_argument("--sweep", default="auto", help="k values for the sweep: 'auto' (0,2,L/4,L/2,3L/4), 'none' or a comma list")
    p.add_argument("--ckpt", default="both", choices=("both", "off", "on"), help="activation checkpointing")
    p.add_argument("--memory", default="auto", choices=("auto", "subprocess", "tracker", "none"),
                   help="CPU peak memory: one subprocess per main arm ('auto' = subprocess on CPU); 'tracker': "
                        "tensor bytes of one warm-up step, in process (benchmarks.memtrack)")
    p.add_argument("--steps", default=None, help="override schedules: warmup,rounds,window")
    p.add_argument("--kernels", default="auto", choices=("auto", "torch", "triton"))
    p.add_argument("--threads", type=int, default=2, help="torch intra-op threads on CPU")
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    p.add_argument("--targets", default=None, choices=("gpu", "cpu"),
                   help="target set to judge (default: gpu for gpu-* presets, else cpu)")
    p.add_argument("--report", default=None, metavar="JSON",
                   help="re-derive summaries, ratios, targets and markdown from a results JSON (no training)")
    p.add_argument("--probe", default=None, help=argparse.SUPPRESS)  # internal: kind:k:ckpt memory probe
    p.add_argument("--probe-jobs", type=int, default=2, help="memory probes run at a time")
    p.add_argument("--probe-timeout", type=int, default=600, help=argparse.SUPPRESS)
    return p.parse_args(argv)


def _resolve_device(name: str) -> torch.device:
    if name == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda but torch.cuda.is_available() is False; use --device cpu")
    return torch.device("cuda" if name == "auto" and torch.cuda.is_available() else (name if name != "auto" else "cpu"))


def _checked(args):
    """(preset, device, kinds, k) from the arguments, with errors that name the fix."""
    preset, device = tp.PRESETS[args.preset], _resolve_device(args.device)
    kinds = [a.strip() for a in args.arms.split(",") if a.strip()]
    bad = [a for a in kinds if a not in ta.ARM_KINDS]
    if bad:
        raise SystemExit(f"--arms: unknown {bad}; choose from {', '.join(ta.ARM_KINDS)}")
    k = preset.k if args.k is None else args.k
    if not 0 <= k <= preset.layers:
        raise SystemExit(f"--k {k}: the {preset.name} model has {preset.layers} layers; use 0..{preset.layers}")
    if args.steps:
        try:
            w, r, n = (int(x) for x in args.steps.split(","))
            sched = tp.Schedule(w, r, n)
        except ValueError:
            raise SystemExit(f"--steps {args.steps!r}: give warmup,rounds,window, e.g. 1,5,1") from None
        preset = tp.Preset(**{**vars(preset), "schedule": sched, "sweep_schedule": sched})
    return preset, device, kinds, k


def _meta(args, argv, preset, k, sweep, device, notes) -> dict:
    return {"preset": preset.name, "config": {**vars(preset), "schedule": vars(preset.schedule),
                                              "sweep_schedule": vars(preset.sweep_schedule)},
            "k": k, "sweep": sweep, "device": _device_name(device), "versions": _versions(),
            "git_commit": _git_commit(), "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "command": "python -m benchmarks.train " + " ".join(argv if argv is not None else sys.argv[1:]),
            "targets": args.targets,
            "loadavg_before": [round(x, 2) for x in os.getloadavg()], "notes": notes, "kernels": args.kernels,
            "timing": "wall time between consecutive optimizer-step ends (data, collator, fwd, bwd, clip, optimizer)"}


def _memory(rows, args, mem_mode: str, device) -> str:
    """Fill peak_mem_bytes where a separate measurement is needed; returns the method's description."""
    if device.type == "cuda":
        return "CUDA max_memory_allocated during the arm's first turn, minus memory held before it was built"
    if mem_mode == "tracker":
        return ("peak live tensor bytes (activations + gradients, parameters excluded) of one warm-up "
                "step per arm, counted by benchmarks.memtrack")
    if mem_mode != "subprocess":
        return "not measured (--memory none)"
    from concurrent.futures import ThreadPoolExecutor

    todo = [r for r in rows if r["group"].startswith("main") and "error" not in r]
    print(f"[bench_train] {len(todo)} memory probes, {args.probe_jobs} at a time", flush=True)
    # Peak RSS does not depend on timing, so probes may share the machine (one thread each).
    with ThreadPoolExecutor(args.probe_jobs) as pool:
        probes = pool.map(lambda r: run_probe_subprocess(tp.ArmSpec(r["kind"], r["k"], r["ckpt"]), args), todo)
        for r, probe in zip(todo, probes):
            r["peak_mem_bytes"] = probe.get("peak_bytes")
            r["mem_method"] = probe.get("method", probe.get("error"))
    return ("peak RSS growth of a fresh subprocess per arm over 2 training steps (after a toy run of the same "
            "arm warms imports; VmHWM reset before the model is built); sweep arms not probed")


def main(argv=None) -> int:
    args = parse_args(argv)
    preset, device, kinds, k = _checked(args)
    torch.set_num_threads(args.threads)
    if args.report:
        return rerender(Path(args.report), preset, k)
    if args.probe:
        kind, pk, ck = args.probe.split(":")
        with tempfile.TemporaryDirectory() as wd:
            ctx = tp.BenchContext(preset, device, wd, schedule=tp.Schedule(2, 0, 1), kernels=args.kernels)
            print("PROBE " + json.dumps(probe_memory(tp.ArmSpec(kind, int(pk), bool(int(ck))), ctx)), flush=True)
        return 0
    sweep = (preset.sweep_ks() if args.sweep == "auto" else [] if args.sweep == "none"
             else [int(x) for x in args.sweep.split(",")])
    ckpt_modes = {"both": [False, True], "off": [False], "on": [True]}[args.ckpt]
    notes = []
    why_not_liger = liger_status(device)
    if "liger" in kinds and why_not_liger:
        notes.append(f"naive + Liger arm skipped: {why_not_liger}")
    elif "liger" in kinds:
        notes.append("Liger arms run after all other groups (Liger patches Llama classes process-wide), "
                     "so they are not interleaved with the naive arm")
    mem_mode = args.memory if args.memory != "auto" else ("subprocess" if device.type == "cpu" else "none")
    meta = _meta(args, argv, preset, k, sweep, device, notes)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    groups = plan(preset, kinds, k, ckpt_modes, sweep, why_not_liger is None)
    with tempfile.TemporaryDirectory() as wd:
        partial = out / f"bench_train_{preset.name}.partial.json"
        rows = run_groups(groups, dict(preset=preset, device=device, workdir=wd, kernels=args.kernels), args,
                          on_group=lambda rs: _io.write_json(partial, {"meta": meta, "arms": rs}, default=str))
    meta["memory_method"] = _memory(rows, args, mem_mode, device)
    meta["loadavg_after"] = [round(x, 2) for x in os.getloadavg()]
    md = finish({"meta": meta, "arms": rows}, out, preset, k)
    partial.unlink(missing_ok=True)
    print(md, flush=True)
    return 1 if any("error" in r for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
