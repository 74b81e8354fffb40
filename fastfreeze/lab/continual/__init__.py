"""Continual learning on task sequences: runner, metrics, evaluation, recovery and orthogonality diagnostics.

Usage:
    from fastfreeze.lab.continual import ContinualConfig, run_continual
    results = run_continual(ContinualConfig.from_yaml("fastfreeze/lab/continual/configs/tiny.yaml"))
"""
from fastfreeze.lab.continual.config import ConfigError, ContinualConfig, StrategyConfig
from fastfreeze.lab.continual.metrics import all_metrics, average_accuracy, backward_transfer, forgetting, forward_transfer
from fastfreeze.lab.continual.presets import load_preset
from fastfreeze.lab.continual.runner import Runner, run_continual

__all__ = [
    "ConfigError", "ContinualConfig", "Runner", "StrategyConfig", "all_metrics", "average_accuracy",
    "backward_transfer", "forgetting", "forward_transfer", "load_preset", "run_continual",
]
