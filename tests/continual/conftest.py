"""Fixtures for the continual-learning tests: the quick run (single-threaded by tests/conftest.py)."""
import pytest


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    """The `quick` preset run end to end once per module: (config, results, output dir)."""
    from fastfreeze.continual.presets import load_preset
    from fastfreeze.continual.runner import run_continual

    out = tmp_path_factory.mktemp("quick")
    cfg = load_preset("quick", output_dir=str(out))
    results = run_continual(cfg, log=lambda *_: None)
    return cfg, results, out
