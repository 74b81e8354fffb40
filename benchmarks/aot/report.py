"""Markdown tables and run metadata for benchmarks/aot/check.py (one table per GPU architecture)."""
from __future__ import annotations

import datetime as _dt
import os
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _flags(cx: dict, kernel) -> str:
    names = [p.name for p in kernel.params] if kernel is not None else []
    out = []
    for k, val in cx.items():
        idx = int(k.strip("(),").split(",")[0])
        name = names[idx] if idx < len(names) else k
        out.append(f"{name}={int(val) if isinstance(val, bool) else val}")
    return " ".join(out)


def _dtypes(sig: dict) -> str:
    return "/".join(sorted({t[1:] for t in sig.values() if t.startswith("*")}))


def markdown(variants: list, arch: str, meta: dict) -> str:
    vs = [v for v in variants if v.arch == arch]
    bad = [v for v in vs if not v.result.get("ok")]
    regs = [v.result["reg"] for v in vs if "reg" in v.result]
    lines = [f"# AOT compile check: {arch}", "",
             f"{meta['date']} · compiled on {meta['machine']} (no GPU) · triton {meta['triton']} · torch "
             f"{meta['torch']} · commit `{meta['commit']}` · {meta['seconds']:.0f} s", f"`{meta['command']}`", "",
             f"{len(vs)} unique specializations from {meta['cases']} launcher calls; {len(vs) - len(bad)} pass, "
             f"{len(bad)} fail. Registers {min(regs, default=0)}-{max(regs, default=0)} per thread; "
             f"spilling variants: {sum(1 for v in vs if v.result.get('local') or v.result.get('local_ops'))}.", "",
             "Columns: `div16` = pointer/integer arguments the JIT's binder marks 16-divisible; widths in bits "
             "(SASS `LDG`/`STG`); `stream` = narrowest access on a streaming line (per-row values excluded); "
             "occupancy = resident warps / 64, estimated from registers, warps and shared memory.", "",
             "| kernel | constexprs | dtypes | warps | aligned | div16 | REG | local | stack | shared B | LDG | STG | "
             "stream | occupancy | verdict | launcher calls |", "|" + "---|" * 16]
    for v in sorted(vs, key=lambda v: (v.kernel, not v.aligned, v.cases[0])):
        r = v.result
        verdict = ("PASS" + (f" ({r['notes'][0]})" if r.get("notes") else "") if r.get("ok")
                   else "FAIL: " + "; ".join(r.get("problems", []))[:160])
        first = v.cases[0].split(": ", 1)[-1]
        more = f" (+{len(v.cases) - 1})" if len(v.cases) > 1 else ""
        lines.append(f"| {v.kernel} | {_flags(v.constexprs, getattr(v.launch, 'kernel', None))} | "
                     f"{_dtypes(v.signature)} | {v.num_warps} | {'yes' if v.aligned else 'no'} | {v.div16} | "
                     f"{r.get('reg', '-')} | {r.get('local', '-')} | {r.get('stack', '-')} | {r.get('shared', '-')} | "
                     f"{r.get('widest_ldg', '-')} | {r.get('widest_stg', '-')} | {r.get('narrowest_stream') or '-'} | "
                     f"{r['occupancy']:.2f} | {verdict} | {first}{more} |" if "occupancy" in r else
                     f"| {v.kernel} | | {_dtypes(v.signature)} | {v.num_warps} | | | | | | | | | | | {verdict} | {first}{more} |")
    return "\n".join(lines) + "\n"


def _meta(argv, n_cases: int, seconds: float) -> dict:
    import platform

    import torch
    import triton

    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                                timeout=10).stdout.strip() or "unknown"
    except OSError:
        commit = "unknown"
    cpu = next((ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
                if ln.startswith("model name")), platform.processor()) if Path("/proc/cpuinfo").exists() else "?"
    return {"date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"), "triton": triton.__version__,
            "torch": torch.__version__, "commit": commit, "machine": f"CPU {cpu} ({os.cpu_count()} cores)",
            "command": "python -m benchmarks.aot " + " ".join(argv), "cases": n_cases, "seconds": seconds}
