"""Tests of benchmarks/, one folder per concern, as benchmarks/ is laid out."""
