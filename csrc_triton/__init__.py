"""Fused Triton kernels for fastfreeze: forward-only ops for the frozen prefix, training ops for the suffix."""
