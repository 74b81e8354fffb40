"""AOT compile check in CI: every csrc_triton kernel, specialized as its launchers would on a GPU, compiles for sm_80 / sm_90a / sm_100 without spills or scalar streaming loads."""
from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
ARCHS = ("sm_80", "sm_90a", "sm_100")


def _kernel_names() -> set[str]:
    """Every @triton.jit kernel (name ending in _kernel) defined in csrc_triton's op modules."""
    import csrc_triton

    names = set()
    for mod in csrc_triton._OP_MODULES:  # every op module, as the package exposes them (a new op is covered too)
        m = importlib.import_module(f"csrc_triton.{mod}")
        names |= {n for n, obj in vars(m).items() if n.endswith("_kernel") and hasattr(obj, "fn")}
    return names


@pytest.fixture(scope="module")
def aot(tmp_path_factory):
    """The CI matrix, compiled in a fresh process (kernels must be compiled, not interpreted) with an empty
    Triton cache, so the time is the cold time a clean CI machine pays (about 1 min for 3 archs here)."""
    pytest.importorskip("triton")
    tmp = tmp_path_factory.mktemp("aot")
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["TRITON_CACHE_DIR"] = str(tmp / "cache")
    out = subprocess.run([sys.executable, "-m", "benchmarks.aot", "--arch", ",".join(ARCHS), "--matrix", "ci",
                          "--no-md", "--json", str(tmp / "aot.json"), "--selftest"],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    data = json.loads((tmp / "aot.json").read_text()) if (tmp / "aot.json").exists() else None
    return out, data


def test_every_kernel_compiles_for_every_arch(aot):
    out, data = aot
    assert data is not None, out.stdout[-2000:] + out.stderr[-2000:]
    compiled = {(v["kernel"], v["arch"]) for v in data["variants"]}
    for arch in ARCHS:
        missing = _kernel_names() - {k for k, a in compiled if a == arch}
        assert not missing, f"{arch}: kernels never compiled by the CI matrix: {missing}"
    errors = [(v["kernel"], v["arch"], v["result"]["problems"]) for v in data["variants"]
              if any(p.startswith(("compile error", "launch rejected")) for p in v["result"].get("problems", []))]
    assert not errors, errors


def test_no_spills_and_no_scalar_streaming_access(aot):
    out, data = aot
    bad = [(v["arch"], v["kernel"], v["cases"][0], v["result"]["problems"]) for v in data["variants"]
           if not v["result"]["ok"]]
    assert not bad, "\n".join(map(str, bad))
    assert out.returncode == 0, out.stdout[-2000:]
    for v in data["variants"]:
        assert v["result"]["local"] == 0 and v["result"]["stack"] == 0 and v["result"]["local_ops"] == 0, v


def test_aligned_bf16_streams_use_128_bit_accesses(aot):
    """Vector loads are necessary to reach copy bandwidth: aligned bf16 variants must read and write 16 bytes
    per instruction on their streaming lines (what the JIT gets when pointers, strides and sizes divide by 16)."""
    _, data = aot
    checked = 0
    for v in data["variants"]:
        dtypes = {t for t in v["signature"].values() if t.startswith("*")}
        if v["aligned"] and dtypes <= {"*bf16", "*fp32", "*i64"} and "*bf16" in dtypes and v["kernel"] != "_rope_kernel":
            assert v["result"]["widest_ldg"] == 128 and v["result"]["narrowest_stream"] >= 64, (v["kernel"], v["cases"][0])
            checked += 1
    assert checked >= 10


def test_specializations_come_from_the_binder(aot):
    """Odd shapes lose the divisibility facts; aligned ones keep them on every pointer and integer."""
    _, data = aot
    for v in data["variants"]:
        n_div, n_arg = (int(x) for x in v["div16"].split("/"))
        if not v["aligned"]:
            assert n_div < n_arg, (v["kernel"], v["cases"][0], v["div16"])
    full = [v for v in data["variants"] if v["kernel"] == "_rms_fwd_kernel" and v["aligned"] and "H=4096" in v["cases"][0]]
    assert full and all(v["div16"].split("/")[0] == v["div16"].split("/")[1] for v in full)


def test_the_check_catches_a_misaligned_kernel(aot):
    """--selftest compiles _rms_fwd_kernel with its input pointer 2 bytes off: the check must report scalar loads."""
    _, data = aot
    st = data["selftest"]
    assert not st["ok"] and any("scalar LDG" in p for p in st["problems"]), st


def test_warp_counts_are_powers_of_two():
    common = importlib.import_module("csrc_triton._common")
    for n in range(1, 70000, 97):
        for per, cap in ((512, 16), (256, 32), (128, 32)):
            w = common.row_warps(n, per, cap)
            assert 2 <= w <= cap and w & (w - 1) == 0, (n, per, cap, w)


def test_sass_parsing():
    from benchmarks.aot import check as aot

    sass = ('\t//## File "/x/k.py", line 7\n'
            "        /*0170*/               @P1 LDG.E.128 R12, desc[UR8][R6.64] ;\n"
            "        /*0180*/              @!P4 LDG.E.U16 R17, desc[UR8][R6.64] ;\n"
            '\t//## File "/x/k.py", line 9\n'
            "        /*0190*/                   STG.E.64 desc[UR8][R10.64], R12 ;\n"
            "        /*01a0*/                   STL [R1], R2 ;\n")
    acc, spill = aot.sass_accesses(sass)
    assert [(a["op"], a["bits"], a["line"]) for a in acc] == [("LDG", 128, 7), ("LDG", 16, 7), ("STG", 64, 9)]
    assert spill == {"ops": 1, "in_loop": 0}
    looped = ".L_x_0:\n" + sass + "        /*01b0*/              @!P0 BRA `(.L_x_0) ;\n"
    assert aot.sass_accesses(looped)[1] == {"ops": 1, "in_loop": 1}  # the STL sits between the label and the branch
    assert aot.occupancy(32, 16, 128, 90) == 1.0 and aot.occupancy(255, 8, 0, 90) == 0.125
