"""Continual learning on task sequences: runner, metrics, evaluation, recovery and orthogonality diagnostics.

Usage:
    from fastfreeze.continual import ContinualConfig, run_continual
    results = run_continual(ContinualConfig.from_yaml("fastfreeze/continual/configs/tiny.yaml"))
"""
from .config import ConfigError, ContinualConfig, StrategyConfig
from .metrics import all_metrics, average_accuracy, backward_transfer, forgetting, forward_transfer
from .presets import load_preset
from .runner import Runner, run_continual

__all__ = [
    "ConfigError", "ContinualConfig", "Runner", "StrategyConfig", "all_metrics", "average_accuracy",
    "backward_transfer", "forgetting", "forward_transfer", "load_preset", "run_continual",
]
