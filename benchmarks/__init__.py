"""Benchmarks and the compatibility sweep (`python -m benchmarks.compat`)."""
