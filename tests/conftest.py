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

from fastfreeze.kernels import ENV_SWITCH  # noqa: E402

# The GPU defaults: what kernels="auto" and fused_loss=True give on CUDA (the Triton kernels, interpreted
# here, and the fused loss), instead of the torch ops "auto" picks on CPU. FASTFREEZE_TEST_DEFAULTS=gpu
# runs the whole session in them (every parity test then checks that configuration); the `defaults`
# fixture below runs chosen tests in both (docs/gpu-suite.md lists which, and why not the others).
GPU_DEFAULTS_SWITCH = "FASTFREEZE_TEST_DEFAULTS"
if os.environ.get(GPU_DEFAULTS_SWITCH) == "gpu":
    os.environ[ENV_SWITCH] = "triton"

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


def _triton_language_objects() -> list:
    """What Triton's interpreter patches (its `_patch_lang`): the language modules, the tensor classes."""
    try:
        import triton.language as tl
    except ImportError:
        return []
    return [tl, tl.core, tl.math, tl.core.tensor, tl.core.tensor_descriptor_base]


# Taken before any test runs a kernel (TRITON_INTERPRET is set above, so importing triton here is safe).
_PRISTINE_TRITON = [(obj, dict(vars(obj))) for obj in _triton_language_objects()]


def _restore_attributes(obj, pristine: dict) -> None:
    for name in [n for n in vars(obj) if n not in pristine]:
        delattr(obj, name)
    for name, value in pristine.items():
        if vars(obj).get(name, pristine) is not value:
            setattr(obj, name, value)


@pytest.fixture(autouse=True)
def _global_state_restored():
    """Every test leaves the process as it found it, so the suite passes in any order (checked in reverse and
    random order: docs/versions.md). Restored: the environment variables, and triton.language, which
    Triton 3.9's interpreter patches on each device-function call and never restores
    (`InterpretedFunction.__call__`), so that an AOT compile after any interpreted kernel ran the
    interpreter's semantics ("'value' object has no attribute 'dtype'")."""
    env = dict(os.environ)
    yield
    for name in [n for n in os.environ if n not in env]:
        del os.environ[name]
    os.environ.update({n: v for n, v in env.items() if os.environ.get(n) != v})
    for obj, pristine in _PRISTINE_TRITON:
        _restore_attributes(obj, pristine)


@pytest.fixture(params=["cpu", "gpu"])
def defaults(request, monkeypatch):
    """The test runs in the CPU defaults (torch ops) and in the GPU defaults (Triton + fused loss);
    returns which. Under FASTFREEZE_TEST_DEFAULTS=gpu the whole session is in the GPU defaults, so the
    "cpu" run would repeat the "gpu" one and is skipped. Spawned workers inherit the environment."""
    if request.param == "gpu":
        if os.environ.get("TRITON_INTERPRET") != "1":
            # A CUDA machine: these tests train CPU models, which only the interpreter runs through Triton;
            # there the GPU defaults are checked on CUDA models (the GPU suite, docs/gpu-suite.md).
            pytest.skip("the GPU defaults on CPU models need TRITON_INTERPRET=1 (set without CUDA)")
        monkeypatch.setenv(ENV_SWITCH, "triton")
    elif os.environ.get(GPU_DEFAULTS_SWITCH) == "gpu":
        pytest.skip(f"{GPU_DEFAULTS_SWITCH}=gpu: the session runs in the GPU defaults only")
    else:
        monkeypatch.delenv(ENV_SWITCH, raising=False)
    return request.param


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
