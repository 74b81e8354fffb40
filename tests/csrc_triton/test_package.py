"""csrc_triton package surface: exports, and a clear error (not an import failure) without triton."""
from __future__ import annotations

import subprocess
import sys

import csrc_triton


def test_exports_are_callable_functions():
    for name in ("rms_norm", "swiglu", "apply_rope", "linear_cross_entropy"):
        assert callable(getattr(csrc_triton, name)), name
    assert csrc_triton.AVAILABLE


def test_import_without_triton_raises_only_when_called():
    code = (
        "import sys; sys.modules['triton'] = None\n"  # makes `import triton` fail
        "import csrc_triton\n"
        "assert csrc_triton.AVAILABLE is False\n"
        "try:\n"
        "    csrc_triton.swiglu(None, None)\n"
        "except ImportError as e:\n"
        "    assert 'pip install triton' in str(e), e\n"
        "    print('clear-error')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "clear-error" in out.stdout


def test_cpu_tensor_without_interpreter_is_a_clear_error(monkeypatch):
    import pytest
    import torch

    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    with pytest.raises(RuntimeError, match="kernels='torch'"):
        csrc_triton.swiglu(torch.randn(2, 4), torch.randn(2, 4))
