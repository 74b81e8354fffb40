"""Device-independent memory accounting: a tensor-level tracker, the analytic model, and the benchmark that sets them side by side (`python -m benchmarks.memory`)."""
