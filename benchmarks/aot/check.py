"""Ahead-of-time compile check: every csrc_triton kernel, as its launchers specialize it, built into real GPU cubins on a CPU machine.

Usage:
    python -m benchmarks.aot --arch sm_90a                      # full matrix -> benchmarks/results/aot_sm90a.md
    python -m benchmarks.aot --arch sm_80,sm_90a,sm_100 --matrix ci --json /tmp/aot.json

For each launch recorded by benchmarks/aot/cases.py, Triton's own binder derives the signature,
constexprs and divisibility attributes from the launcher's arguments (what the JIT does on a GPU), the
kernel is compiled for the target, and the cubin is read with the wheel's cuobjdump (registers,
stack, local memory = spills, shared memory) and nvdisasm (global loads/stores and their widths, per
source line). Verdict per compiled variant: FAIL on a compile error, on a spill (local or stack memory)
inside a loop or larger than 16 bytes (smaller ones outside loops are noted in the table), and, where the
shape is aligned, on a scalar access (one element per instruction) in a streaming load or
store. Accesses that are one value per row or program by design carry ``# aot: narrow`` in the kernel
source (or load a scalar pointer, which the check sees in the TTGIR). Needs no GPU and no driver.
"""
from __future__ import annotations

import argparse
import functools
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from fastfreeze._hf_compat import triton_compile, triton_gpu_target, triton_nvidia_tool, triton_specialize

ROOT = Path(__file__).resolve().parents[2]
ARCHS = {"sm_80": 80, "sm_90a": 90, "sm_100": 100}
# Per-SM limits (CUDA programming guide, compute capability tables): registers, resident warps,
# resident blocks, shared memory usable by blocks; 1 KiB of shared memory is reserved per block.
SM_LIMITS = {80: (65536, 64, 32, 167936), 90: (65536, 64, 32, 233472), 100: (65536, 64, 32, 233472)}
SPILL_OK_BYTES = 16  # spills outside loops up to this size are noted, not failed (see judge)
ELEM_BITS = {"bf16": 16, "f16": 16, "fp16": 16, "f32": 32, "fp32": 32, "i64": 64, "i32": 32, "i16": 16, "i8": 8,
             "i1": 8, "f64": 64}


@dataclass
class Variant:
    """One unique compiled specialization and what the check found in it."""

    kernel: str
    arch: str
    signature: dict
    constexprs: dict
    num_warps: int
    aligned: bool
    cases: list = field(default_factory=list)
    result: dict = field(default_factory=dict)
    div16: str = ""  # arguments the binder marked 16-divisible / pointer and integer arguments
    launch: object = field(default=None, repr=False)


# ------------------------------------------------------------------------------------------ specialize + compile
def _tool(name: str) -> str:
    path = triton_nvidia_tool(name)
    if path is None:
        raise SystemExit(f"{name} missing: this triton wheel has no NVIDIA tools; install triton from PyPI")
    return path


def specialize(launch, target):
    """(options, signature, constexprs, attrs) exactly as JITFunction.run derives them for these arguments."""
    import triton

    from benchmarks.aot.cases import as_bindable

    kernel = launch.kernel
    if not isinstance(kernel, triton.JITFunction) or type(kernel).__name__ == "InterpretedFunction":
        raise SystemExit("kernels are interpreted: run the AOT check with TRITON_INTERPRET unset")
    return triton_specialize(kernel, as_bindable(launch.args), launch.kwargs, target)


def compile_variant(launch, arch: str):
    target = triton_gpu_target(ARCHS[arch])
    specialized = specialize(launch, target)
    options, signature, constexprs, _ = specialized
    return triton_compile(launch.kernel, specialized, target), options, signature, constexprs


# ------------------------------------------------------------------------------------------ read the binaries
def resource_usage(cubin: bytes) -> dict:
    with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
        f.write(cubin)
        f.flush()
        out = subprocess.run([_tool("cuobjdump"), "--dump-resource-usage", f.name], capture_output=True, text=True,
                             check=True).stdout
        sass = subprocess.run([_tool("nvdisasm"), "-g", "-c", f.name], capture_output=True, text=True,
                              check=True).stdout
    usage = {k.lower(): int(v) for k, v in re.findall(r"\b(REG|STACK|SHARED|LOCAL):(\d+)", out.split("Function", 1)[-1])}
    return {**usage, "sass": sass}


_OP = re.compile(r"/\*([0-9a-f]{4,})\*/\s+(?:@!?U?P[T0-9]+\s+)?([A-Z][A-Z0-9_.]*)(.*)")
_LINE = re.compile(r'//## File "([^"]+)", line (\d+)')
_LABEL = re.compile(r"^\s*(\.L_x_\d+):")
_BRA = re.compile(r"\(\s*(\.L_x_\d+)\s*\)")


def _width(opcode: str) -> int:
    parts = opcode.split(".")
    for bits in ("256", "128", "64"):
        if bits in parts:
            return int(bits)
    for p in parts:
        if p in ("U8", "S8"):
            return 8
        if p in ("U16", "S16"):
            return 16
    return 32


def sass_accesses(sass: str) -> tuple[list[dict], dict]:
    """Global loads/stores as {op, bits, file, line}, and spills: {"ops": local-memory instruction count,
    "in_loop": how many of them sit inside a loop (between a backward branch and its target)}."""
    where, out, spills, labels, branches, pending = (None, 0), [], [], {}, [], []
    for text in sass.splitlines():
        if m := _LINE.search(text):
            where = (m.group(1), int(m.group(2)))
            continue
        if m := _LABEL.match(text):
            pending.append(m.group(1))
            continue
        m = _OP.search(text)
        if not m:
            continue
        addr, op = int(m.group(1), 16), m.group(2)
        labels.update({name: addr for name in pending})
        pending = []
        if op.startswith(("LDL", "STL")):
            spills.append(addr)
        elif op.startswith(("LDG", "STG")):
            out.append({"op": op[:3], "bits": _width(op), "file": where[0], "line": where[1]})
        elif op.startswith("BRA") and (b := _BRA.search(m.group(3))):
            branches.append((addr, b.group(1)))
    loops = [(labels[t], a) for a, t in branches if t in labels and labels[t] < a]
    in_loop = sum(1 for s in spills if any(lo <= s <= hi for lo, hi in loops))
    return out, {"ops": len(spills), "in_loop": in_loop}


_LOCDEF = re.compile(r"^(#loc\d*) = loc\((.*)\)\s*$")


def ttgir_accesses(ttgir: str) -> list[dict]:
    """tt.load / tt.store ops as {op, elem_bits, tensor, file, line} (locations resolved through aliases)."""
    defs = {m.group(1): m.group(2) for m in map(_LOCDEF.match, ttgir.splitlines()) if m}

    def resolve(expr: str, depth=0):
        m = re.search(r'"([^"]+\.py)":(\d+)', expr)
        if m:
            return m.group(1), int(m.group(2))
        ref = re.search(r"(#loc\d*)", expr)
        return resolve(defs.get(ref.group(1), ""), depth + 1) if ref and depth < 20 else (None, 0)

    out = []
    for text in ttgir.splitlines():
        m = re.search(r"\btt\.(load|store)\b.*:\s*(tensor<[^>]*!tt\.ptr<(\w+)>[^>]*>|!tt\.ptr<(\w+)>).*loc\((.*)\)", text)
        if not m:
            continue
        elem = m.group(3) or m.group(4)
        file, line = resolve(m.group(5))
        out.append({"op": "LDG" if m.group(1) == "load" else "STG", "elem_bits": ELEM_BITS.get(elem, 32),
                    "tensor": m.group(2).startswith("tensor"), "file": file, "line": line})
    return out


def occupancy(regs: int, num_warps: int, shared: int, cc: int) -> float:
    """Resident warps / max warps per SM from registers (allocated per warp in units of 256), warps,
    blocks and shared memory: an estimate, as the CUDA occupancy calculator computes it."""
    reg_file, max_warps, max_blocks, smem = SM_LIMITS[cc]
    regs_per_warp = -(-max(regs, 1) * 32 // 256) * 256
    blocks = min(max_blocks, max_warps // num_warps, (reg_file // regs_per_warp) // num_warps,
                 smem // (shared + 1024))
    return blocks * num_warps / max_warps


# ------------------------------------------------------------------------------------------ judge
@functools.lru_cache(maxsize=None)
def _source_lines(file: str) -> tuple[str, ...]:
    """A kernel file's lines, read once (collect() reads them before compiling: later edits don't count)."""
    try:
        return tuple(Path(file).read_text().splitlines())
    except OSError:
        return ()


def _narrow_ok(file: str, line: int) -> bool:
    lines = _source_lines(file)
    return 0 < line <= len(lines) and "# aot: narrow" in lines[line - 1]


def judge(compiled, arch: str, num_warps: int, aligned: bool) -> dict:
    usage = resource_usage(compiled.asm["cubin"])
    sass, spill = sass_accesses(usage.pop("sass"))
    local_ops = spill["ops"]
    ir = ttgir_accesses(compiled.asm["ttgir"])
    res = {"reg": usage.get("reg", 0), "stack": usage.get("stack", 0), "local": usage.get("local", 0),
           "shared": int(getattr(compiled.metadata, "shared", 0) or 0), "local_ops": local_ops,
           "widest_ldg": max((a["bits"] for a in sass if a["op"] == "LDG"), default=0),
           "widest_stg": max((a["bits"] for a in sass if a["op"] == "STG"), default=0)}
    res["occupancy"] = occupancy(res["reg"], num_warps, res["shared"], ARCHS[arch])
    problems, stream_bits = [], []
    res["spill_in_loop"] = spill["in_loop"]
    if res["local"] or res["stack"] or local_ops:
        what = f"spills: {res['local']} B local, {res['stack']} B stack, {local_ops} LDL/STL ({spill['in_loop']} in loops)"
        # A few bytes saved once per program, outside every loop (ptxas trading them for occupancy on sm_80),
        # cost a couple of L1 accesses per program: noted, not failed. Anything in a loop, or more, fails.
        if spill["in_loop"] or res["local"] + res["stack"] > SPILL_OK_BYTES:
            problems.append(what)
        else:
            res["notes"] = [what + ": outside loops, accepted"]
    for acc in ir:
        if not acc["tensor"] or acc["file"] is None or _narrow_ok(acc["file"], acc["line"]):
            continue
        bits = [a["bits"] for a in sass if a["op"] == acc["op"] and a["line"] == acc["line"] and a["file"] == acc["file"]]
        if not bits:
            continue  # folded into another line's instructions by the compiler; nothing to judge here
        stream_bits.append(min(bits))
        if aligned and min(bits) <= acc["elem_bits"]:
            problems.append(f"scalar {acc['op']} ({min(bits)}-bit, {acc['elem_bits']}-bit elements) at "
                            f"{Path(acc['file']).name}:{acc['line']}")
    res["narrowest_stream"] = min(stream_bits, default=None)
    res["problems"] = problems
    res["ok"] = not problems
    return res


# ------------------------------------------------------------------------------------------ run
def collect(cases, archs) -> list[Variant]:
    """Unique specializations per arch (binder only, no compile). A variant is judged as aligned when any
    case that maps to it is aligned: the compiled code is the same for all of them."""
    variants: dict[tuple, Variant] = {}
    for arch in archs:
        target = triton_gpu_target(ARCHS[arch])
        for case in cases:
            for launch in case.launches:
                try:
                    options, signature, constexprs, attrs = specialize(launch, target)
                except AssertionError as err:  # Triton refuses the launch itself (e.g. num_warps not a power of 2)
                    v = Variant(launch.kernel.fn.__name__, arch, {}, {}, launch.kwargs.get("num_warps", 0), case.aligned,
                                [f"{case.op}: {case.label}"], {"ok": False, "problems": [f"launch rejected: {err}"]})
                    variants[(v.kernel, arch, f"rejected {case.label} {len(variants)}")] = v
                    continue
                cx = {str(k): v for k, v in constexprs.items()}
                key = (launch.kernel.fn.__name__, arch, json.dumps([signature, cx, {str(k): v for k, v in attrs.items()},
                                                                    options.num_warps], default=str))
                v = variants.get(key)
                if v is None:
                    v = variants[key] = Variant(key[0], arch, signature, cx, options.num_warps, False)
                    v.launch = launch
                    n_div = sum(any(a[0] == "tt.divisibility" for a in vals) for vals in attrs.values())
                    n_arg = sum(1 for t in signature.values() if t[0] == "*" or t[0] in "iu")
                    v.div16 = f"{n_div}/{n_arg}"
                _source_lines(launch.kernel.fn.__code__.co_filename)
                v.aligned = v.aligned or case.aligned
                v.cases.append(f"{case.op}: {case.label}")
    return list(variants.values())


def compile_all(variants: list[Variant], log=print) -> None:
    for i, v in enumerate(variants, 1):
        if v.launch is None:  # rejected before compiling
            log(f"[aot] {i}/{len(variants)} {v.arch} {v.kernel} {v.cases[0]}: FAIL {v.result['problems'][0]}")
            continue
        t0 = time.perf_counter()
        try:
            compiled, *_ = compile_variant(v.launch, v.arch)
            v.result = judge(compiled, v.arch, v.num_warps, v.aligned)
        except Exception as err:  # a compile error is a finding, not a crash of the check
            v.result = {"ok": False, "problems": [f"compile error: {type(err).__name__}: {str(err)[:300]}"]}
        v.result["compile_s"] = round(time.perf_counter() - t0, 2)
        state = "ok" if v.result["ok"] else "FAIL " + "; ".join(v.result["problems"])
        log(f"[aot] {i}/{len(variants)} {v.arch} {v.kernel} {v.cases[0]}: {state} ({v.result['compile_s']}s)")


def selftest(arch: str = "sm_90a") -> dict:
    """The check must see what it is for: _rms_fwd_kernel (H=4096, bf16) with its input pointer 2 bytes off
    16-byte alignment compiles to scalar loads, which judge() must report as a failure of an aligned shape."""
    import dataclasses

    import torch

    from benchmarks.aot import cases as aot_cases

    case = aot_cases.rms_cases(4096, torch.bfloat16, torch.bfloat16, aot_cases.TOKENS, True, "selftest")[0]
    launch = case.launches[0]
    x = launch.args[0]
    shifted = torch.empty(x.numel() + 1, dtype=x.dtype, device="meta")[1:].view(x.shape)  # +2 bytes
    bad = dataclasses.replace(launch, args=(shifted, *launch.args[1:]))
    compiled, options, *_ = compile_variant(bad, arch)
    return judge(compiled, arch, options.num_warps, aligned=True)


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    p = argparse.ArgumentParser(prog="python -m benchmarks.aot", description=__doc__.split("\n")[0])
    p.add_argument("--arch", default="sm_90a", help=f"comma list of {', '.join(ARCHS)}")
    p.add_argument("--matrix", default="full", choices=("full", "ci"))
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results"), help="folder for aot_<arch>.md")
    p.add_argument("--no-md", action="store_true", help="write no markdown tables")
    p.add_argument("--json", default=None, help="also write every variant's findings to this JSON file")
    p.add_argument("--selftest", action="store_true", help="also prove the check flags a misaligned kernel (JSON)")
    args = p.parse_args(argv)
    archs = [a.strip() for a in args.arch.split(",") if a.strip()]
    if bad := [a for a in archs if a not in ARCHS]:
        raise SystemExit(f"--arch {bad}: choose from {', '.join(ARCHS)}")
    if os.environ.get("TRITON_INTERPRET") == "1":
        raise SystemExit("TRITON_INTERPRET=1 is set: the kernels would be interpreted, not compiled; unset it")
    from benchmarks.aot import cases as aot_cases
    from benchmarks.aot.report import _meta, markdown
    from fastfreeze import _io  # after the check above: importing fastfreeze imports torch

    t0 = time.perf_counter()
    cases = aot_cases.full_matrix() if args.matrix == "full" else aot_cases.ci_matrix()
    variants = collect(cases, archs)
    print(f"[aot] {len(cases)} launcher calls -> {len(variants)} unique specializations over {archs}", flush=True)
    compile_all(variants)
    meta = _meta(argv, len(cases), time.perf_counter() - t0)
    if not args.no_md:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        for arch in archs:
            _io.write_text(out / f"aot_{arch.replace('_', '')}.md", markdown(variants, arch, meta))
    if args.json:
        rows = [{k: val for k, val in vars(v).items() if k != "launch"} for v in variants]
        doc = {"meta": meta, "variants": rows}
        if args.selftest:
            doc["selftest"] = selftest()
        _io.write_json(args.json, doc, indent=1, default=str)
    failed = [v for v in variants if not v.result.get("ok")]
    print(f"[aot] {len(variants) - len(failed)} pass, {len(failed)} fail, {meta['seconds']:.0f} s", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
