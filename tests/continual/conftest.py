"""Fixtures for the continual-learning tests: one thread (tiny models; avoids oversubscribing CI cores), the quick run."""
import pytest
import torch


@pytest.fixture(autouse=True)
def _one_thread():
    # Tiny models gain nothing from intra-op threads, and on a shared 2-core CI box two threads
    # per process were measured ~20x slower per step than one.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    """The `quick` preset run end to end once per module: (config, results, output dir)."""
    from fastfreeze.continual.presets import load_preset
    from fastfreeze.continual.runner import run_continual

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        out = tmp_path_factory.mktemp("quick")
        cfg = load_preset("quick", output_dir=str(out))
        results = run_continual(cfg, log=lambda *_: None)
    finally:
        torch.set_num_threads(before)
    return cfg, results, out
