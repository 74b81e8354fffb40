"""Kernel-test setup for every test here: the fixtures of tests/_kernel_fixtures.py (NaN-filled kernel buffers,
a seed per test, the error-budget check, the device)."""
from tests._kernel_fixtures import _fresh_seed, check, dev, nan_buffers  # noqa: F401  (fixtures)
