"""Compatibility sweep: does FastFreezeTrainer train every registered causal-LM type like the plain recipe (`python -m benchmarks.compat`)."""
