"""Final step of benchmarks/gpu/suite.sh: gather every step's results into at most 8 files and print one verdict line per GPU target.

Usage (the suite calls it): python -m benchmarks.gpu.report --work WORK --out OUT --log OUT/gpu_suite.log [--rehearse]

Files under OUT: gpu_suite.log (written by the suite), summary.md (verdicts + every step's markdown),
bench_kernels.json, bench_train_gpu-1b.json, bench_train_gpu-8b-slice.json, gpu_fsdp_check.json and the two
arms plots. The verdicts come from the targets each benchmark computed itself (bench_kernels.evaluate_targets,
bench_train.check_targets with the GPU target set, the FSDP checks), grouped per target: a target measured
at several shapes passes only if every shape passes, and shows its worst value. In a rehearsal (CPU, toy
shapes) the same code runs and every line says REHEARSAL: it proves the path, not the GPU.
"""
from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

from fastfreeze import _io

MAX_FILES = 8
TRAIN = (("gpu-1b", "train-1b"), ("gpu-8b-slice", "train-8b"))


def _load(path: Path | None):
    return json.loads(path.read_text()) if path and path.exists() else None


def _latest(folder: Path, pattern: str) -> Path | None:
    found = sorted(folder.glob(pattern)) if folder.exists() else []
    final = [p for p in found if ".partial." not in p.name]
    return (final or found or [None])[-1]


def kernel_verdicts(result) -> list[tuple]:
    """(state, name, value text) per bench_kernels target, shapes grouped."""
    if result is None:
        return [("FAIL", "bench_kernels produced no results", "")]
    groups: dict[str, list[dict]] = {}
    for t in result.get("targets", []):
        groups.setdefault(re.sub(r"\s*\([^)]*\)$", "", t["target"]), []).append(t)
    out = []
    for name, ts in groups.items():
        higher = ">=" in name
        worst = (min if higher else max)(ts, key=lambda t: t["value"])
        shape = re.search(r"\(([^)]*)\)$", worst["target"])
        out.append(("PASS" if all(t["pass"] for t in ts) else "FAIL", name,
                    f"worst {worst['value']:.3f}{' at ' + shape.group(1) if shape else ''} over {len(ts)} shape(s)"))
    expected = ("rms_norm fwd >= 85% copy", "swiglu fwd >= 85% copy", "rms_norm fwd+bwd faster than torch.compile(hf)",
                "rms_norm fwd+bwd faster than liger", "FLCE peak memory <= 10% of HF", "FLCE time <= 1.1x HF")
    for name in expected:
        if name not in groups:
            why = "liger-kernel not installed" if "liger" in name else "not measured (step failed or skipped)"
            out.append(("N/A", name, why))
    return out


def train_verdicts(label: str, result) -> list[tuple]:
    if result is None:
        return [("N/A", f"{label}: bench_train", "no results (step failed, timed out or skipped)")]
    out = []
    for t in result.get("targets", []):
        state = "N/A" if t["ok"] is None else ("PASS" if t["ok"] else "FAIL")
        value = "arm missing" if t["value"] is None else f"{t['value']:.4g} (limit {t['limit']})"
        out.append((state, f"{label}: {t['name']}", value))
    return out


def fsdp_verdicts(result) -> list[tuple]:
    if result is None:
        return [("FAIL", "FSDP check", "no results")]
    out = []
    for name, c in result.get("checks", {}).items():
        state = "N/A" if c["ok"] is None else ("PASS" if c["ok"] else "FAIL")
        detail = c["detail"] if isinstance(c["detail"], str) else ""
        if isinstance(c["detail"], dict) and c["detail"].get("fsdp_active") is False:
            detail = "FSDP not active (Trainer fell back)"
        out.append((state, f"FSDP: {name}", detail[:120]))
    return out


def step_verdicts(work: Path) -> list[tuple]:
    rows = [ln.split("\t") for ln in (work / "steps.tsv").read_text().splitlines()] if (work / "steps.tsv").exists() else []
    return [("PASS" if rc == "0" else ("N/A" if rc == "skipped" else "FAIL"), f"step {name}",
             f"rc {rc}, {secs} s") for name, rc, secs in rows]


def collect(work: Path, out: Path) -> dict:
    """Copy each step's result JSON to OUT under a fixed name; plots next to them. Returns the loaded results."""
    found = {"bench_kernels.json": _latest(work / "kernels", "bench_kernels_*.json"),
             "gpu_fsdp_check.json": _latest(work / "fsdp", "gpu_fsdp_check_*.json")}
    for preset, sub in TRAIN:
        found[f"bench_train_{preset}.json"] = _latest(work / sub, "bench_train_*.json")
    loaded = {}
    for name, src in found.items():
        loaded[name] = _load(src)
        if src is not None:
            with _io.atomic_file(out / name, "wb") as f:
                f.write(Path(src).read_bytes())
    for preset, _ in TRAIN:
        if loaded.get(f"bench_train_{preset}.json"):
            try:
                from benchmarks.train import plot

                plot.plot_arms(loaded[f"bench_train_{preset}.json"], out / f"bench_train_{preset}_arms.png")
            except Exception as err:  # a plot must never cost the verdicts
                print(f"[suite_report] plot for {preset} failed: {type(err).__name__}: {err}")
    return loaded


def _markdown_of(work: Path) -> list[str]:
    parts = []
    for pattern in ("kernels/bench_kernels_*.md", "train-1b/bench_train_*.md", "train-8b/bench_train_*.md"):
        for p in sorted(work.glob(pattern)):
            parts += ["", p.read_text()]
    return parts


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--work", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--log", default=None)
    p.add_argument("--rehearse", action="store_true")
    args = p.parse_args(argv)
    work, out = Path(args.work), Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    loaded = collect(work, out)
    verdicts = step_verdicts(work) + kernel_verdicts(loaded["bench_kernels.json"])
    for preset, _ in TRAIN:
        verdicts += train_verdicts(preset, loaded[f"bench_train_{preset}.json"])
    verdicts += fsdp_verdicts(loaded["gpu_fsdp_check.json"])
    tag = "REHEARSAL " if args.rehearse else ""
    lines = [f"{tag}{state}: {name} | {value}" for state, name, value in verdicts]
    head = ("# GPU suite: REHEARSAL on CPU at toy shapes (kernels interpreted): these verdicts prove the code path, "
            "not a GPU" if args.rehearse else "# GPU suite results")
    _io.write_text(out / "summary.md", "\n".join([head, "", "## Verdicts", "", *[f"- {ln}" for ln in lines],
                                               *_markdown_of(work)]) + "\n")
    files = sorted(f.name for f in out.iterdir() if f.is_file())
    if len(files) > MAX_FILES and not args.rehearse:
        print(f"[suite_report] warning: {len(files)} files in {out} (> {MAX_FILES}); other files were there before")
    text = "\n".join(lines)
    if args.log:  # appended to the suite's running log (a log grows; it is not replaced)
        with open(args.log, "a") as f:
            f.write(text + "\n")
    print(f"[suite_report] wrote {len(files)} files to {out}: {', '.join(files)}")
    print(text)
    if args.rehearse:  # toy-shape numbers cannot meet GPU targets: a rehearsal fails only if a step or a result did
        broken = [name for state, name, _ in verdicts if state == "FAIL" and (name.startswith("step ") or
                                                                           "no results" in name)]
        missing = [n for n, v in loaded.items() if v is None]
        return 1 if broken or missing else 0
    return 1 if any(state == "FAIL" for state, _, _ in verdicts) else 0


if __name__ == "__main__":
    sys.exit(main())
