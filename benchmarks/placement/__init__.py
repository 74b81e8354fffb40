"""Where users load and place models: construction, probe, step time and peak memory per arm (`python -m benchmarks.placement`)."""
