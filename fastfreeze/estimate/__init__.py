"""Predictions from a model's shapes alone: FLOPs per step, memory per step, cache size, and when the cache pays (`fastfreeze estimate`).

Modules: `shape` (a config.json as the shapes the models read, parameter counts), `flops` (step-time
ratios), `memory` (activations, gradients, optimizer state), `payoff` (cache size, read vs
recompute, break-even epoch), `report` (all of it as data and as text). The benchmarks import the
FLOP and memory models from here; tests check them against the committed CPU measurements.

Usage::

    from fastfreeze.estimate import Device, ModelShape, estimate, render
    print(render(estimate(ModelShape.from_config("config.json", seq=2048, batch=8), k=16,
                          dataset_tokens=5e8, epochs=3, dev=Device.named("h100"))))
"""
from .payoff import Device, cache_bytes, payoff
from .report import Estimate, estimate, render
from .shape import ModelShape, load_config_dict

__all__ = ["Device", "Estimate", "ModelShape", "cache_bytes", "estimate", "load_config_dict", "payoff", "render"]
