"""`bash benchmarks/gpu/suite.sh --rehearse`: every step of the GPU suite runs on CPU at toy shapes and ends with the verdict lines."""
from __future__ import annotations

import importlib.util
import os
import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
TARGETS = ("rms_norm fwd >= 85% copy", "swiglu fwd >= 85% copy", "rms_norm fwd+bwd faster than torch.compile(hf)",
           "rms_norm fwd+bwd faster than liger", "FLCE peak memory <= 10% of HF", "FLCE time <= 1.1x HF",
           "gpu-1b: warm tokens/s vs suffix-only floor >= 0.95x", "gpu-1b: warm tokens/s vs naive >= 1.5x",
           "gpu-1b: warm tokens/s vs naive+Liger >= 1.25x", "gpu-1b: warm peak memory vs naive <= 0.5x",
           "gpu-8b-slice: warm tokens/s vs suffix-only floor >= 0.95x", "FSDP: fsdp2_parity_and_no_frozen_grads",
           "FSDP: fsdp1_parity_and_no_frozen_grads", "FSDP: fsdp2_memory_cache", "FSDP: nccl_backend")


@pytest.fixture(scope="module")
def rehearsal(tmp_path_factory):
    out = tmp_path_factory.mktemp("suite")
    env = {**os.environ, "OUT": str(out)}
    env.pop("TRITON_INTERPRET", None)  # the script sets it itself for the rehearsal
    proc = subprocess.run(["bash", "benchmarks/gpu/suite.sh", "--rehearse"], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=600)
    return proc, out


def test_rehearsal_runs_every_step(rehearsal):
    proc, _ = rehearsal
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    for step in ("kernel tests", "bench_kernels", "bench_train gpu-1b", "gpu defaults bf16", "fsdp check",
                 "placement check", "bench_train gpu-8b-slice"):
        assert re.search(rf"REHEARSAL PASS: step {re.escape(step)}", proc.stdout), step
    assert "REHEARSAL N/A: FSDP: fsdp1_parity_and_no_frozen_grads" in proc.stdout  # accelerate needs a GPU for FSDP1
    assert "REHEARSAL N/A: FSDP: nccl_backend" in proc.stdout  # gloo on CPU
    flash = importlib.util.find_spec("flash_attn") is not None  # the step runs where flash-attn is installed
    assert f"REHEARSAL {'PASS' if flash else 'N/A'}: step flash-attn varlen packed cache" in proc.stdout


def test_ends_with_one_verdict_line_per_gpu_target(rehearsal):
    proc, _ = rehearsal
    lines = proc.stdout.strip().splitlines()
    tail = lines[next(i for i, ln in enumerate(lines) if ln.startswith("REHEARSAL ")):]
    assert all(re.match(r"REHEARSAL (PASS|FAIL|N/A): ", ln) for ln in tail), tail
    names = [ln.split(": ", 1)[1].rsplit(" | ", 1)[0] for ln in tail]
    for target in TARGETS:
        assert target in names, target
    assert len(names) == len(set(names))


def test_at_most_eight_files(rehearsal):
    _, out = rehearsal
    files = sorted(p.name for p in out.iterdir())
    assert len(files) <= 8, files
    assert {"gpu_suite.log", "summary.md", "bench_kernels.json", "bench_train_gpu-1b.json",
            "gpu_fsdp_check.json"} <= set(files)
    assert "REHEARSAL" in (out / "summary.md").read_text().splitlines()[0]
