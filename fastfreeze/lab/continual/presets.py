"""Named run presets (`quick`, `tiny`, `five_task`, `five_task_fair`, `paper`), stored as YAML next to this file."""
from __future__ import annotations

from pathlib import Path

from fastfreeze.lab.continual.config import ConfigError, ContinualConfig

CONFIG_DIR = Path(__file__).parent / "configs"
PRESETS = ("quick", "tiny", "five_task", "five_task_fair", "paper")


def preset_path(name: str) -> Path:
    """The YAML file of preset `name`. Usage: `preset_path("tiny")`."""
    if name not in PRESETS:
        raise ConfigError(f"unknown preset {name!r}; choose one of {PRESETS}.")
    path = CONFIG_DIR / f"{name}.yaml"
    if not path.is_file():
        raise ConfigError(f"preset file {path} is missing from the installed package; reinstall fastfreeze.")
    return path


def load_preset(name: str, output_dir: str | None = None) -> ContinualConfig:
    """A preset as a validated ContinualConfig. Usage: `cfg = load_preset("quick", output_dir="/tmp/run")`."""
    cfg = ContinualConfig.from_yaml(preset_path(name))
    if output_dir is not None:
        cfg.output_dir = output_dir
    cfg.validate()
    return cfg
