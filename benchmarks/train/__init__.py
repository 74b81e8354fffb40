"""The end-to-end training benchmark: presets, the training arms, step timing, the FLOP model, report and plots (`python -m benchmarks.train`)."""
