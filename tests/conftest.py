"""Test-session set-up (Triton interpreter on CPU, one thread, quiet integrations) and shared fixtures.

Shared helpers (tiny models of every family, data, the seed snippet) live in tests/_helpers.py."""
from __future__ import annotations

import os
import warnings

import torch

# Triton kernels run on CPU only through the interpreter, and it must be on before anything imports
# triton (loading a transformers model class does), or the kernels are compiled for a missing GPU.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest  # noqa: E402

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("WANDB_DISABLED", "true")
warnings.filterwarnings("ignore", message=".*tied to the input embedding.*")
# Tiny models: intra-op threading costs more than it gains, and on a shared 2-core machine it
# oversubscribes the cores (measured: a tiny generate went from ~25 s to 0.2 s with one thread).
torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _one_thread():
    """Every test starts single-threaded and leaves the process that way, whatever it changed
    (module-scoped fixtures run between tests, so they inherit it too)."""
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(1)


@pytest.fixture
def tmp_out(tmp_path):
    return str(tmp_path / "out")


# ------------------------------------------------------------------ end-to-end runs shared by several test modules
@pytest.fixture(scope="session")
def quick_run(tmp_path_factory):
    """The `quick` preset run end to end, once per test session: (config, results, output dir)."""
    from fastfreeze.lab.continual.presets import load_preset
    from fastfreeze.lab.continual.runner import run_continual

    out = tmp_path_factory.mktemp("quick")
    cfg = load_preset("quick", output_dir=str(out))
    results = run_continual(cfg, log=lambda *_: None)
    return cfg, results, out


@pytest.fixture(scope="session")
def tiny_demo(tmp_path_factory):
    """The safety demo at toy size, once per test session: (output dir, runs)."""
    from fastfreeze.lab.safety.demo import run_safety_demo
    from tests._helpers import TINY_ALIGN, TINY_DATA, TINY_MODEL

    out = tmp_path_factory.mktemp("safety")
    runs = run_safety_demo(out, ks=(1,), epochs=(2,), finetune={"learning_rate": 3e-3}, log=lambda *_: None,
                           model=TINY_MODEL, align=TINY_ALIGN, data_sizes=TINY_DATA)
    return out, runs
