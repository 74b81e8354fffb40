"""fastfreeze: freeze the embedding + bottom k layers of an LLM and turn the freeze into speed and memory.

Usage:
    from fastfreeze import FastFreezeTrainer, FreezeConfig
    trainer = FastFreezeTrainer(model=model, args=args, train_dataset=ds,
                                freeze_config=FreezeConfig(num_frozen_layers=6))
"""
from .families import FAMILIES, UnsupportedModelError, resolve
from .config import FreezeConfig, FreezeConfigError
from .freeze import FreezeReport, freeze_bottom_layers
from .prefix import FrozenPrefix
from .runtime import FreezeRuntime, apply_freeze
from .trainer import FastFreezeTrainer, FreezeMixin
from ._version import __version__  # noqa: F401 (the package version)


def __getattr__(name):
    # TRL is optional: import the SFT trainer only when asked for.
    if name == "FastFreezeSFTTrainer":
        from .integrations.trl import FastFreezeSFTTrainer

        return FastFreezeSFTTrainer
    raise AttributeError(f"module 'fastfreeze' has no attribute {name!r}")

__all__ = [
    "FAMILIES", "FastFreezeTrainer", "FreezeConfig", "FreezeConfigError", "FreezeMixin", "FreezeReport",
    "FreezeRuntime", "FrozenPrefix", "UnsupportedModelError", "apply_freeze", "freeze_bottom_layers", "resolve",
]
