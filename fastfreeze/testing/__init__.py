"""Helpers for tests and benchmarks only (not for training scripts): tiny random models of every supported family."""
