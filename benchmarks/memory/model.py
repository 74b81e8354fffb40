"""Analytic memory model of one training step per bench_train arm (moved to fastfreeze.estimate.memory; re-exported here).

Usage:  predict(preset, "ff-warm", k=8, ckpt=False, fused=True, kernels="triton", batch=4, seq=2048)
"""
from __future__ import annotations

from fastfreeze.estimate.memory import Dims, block_bytes, head_bytes, predict, weight_state_bytes

__all__ = ["Dims", "block_bytes", "head_bytes", "predict", "weight_state_bytes"]
