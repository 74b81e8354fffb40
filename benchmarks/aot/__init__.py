"""Ahead-of-time compile check: csrc_triton kernels built into real GPU cubins on a CPU machine (`python -m benchmarks.aot`)."""
