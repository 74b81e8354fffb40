"""Kernel benchmarks: each csrc_triton op against HF torch code, torch.compile and Liger-Kernel (`python -m benchmarks.kernels`)."""
