"""Old import paths of the lab (moved out of the library on 2026-12-07) fail with a message naming the new path.

`import fastfreeze.continual.runner` raises `ModuleNotFoundError: fastfreeze.continual.runner moved to
fastfreeze.lab.continual.runner; import that instead`. The finder answers only for the moved names, none of
which exists any more, so it changes no existing module's import; it goes first in `sys.meta_path` so that a
stale copy elsewhere (an older editable install) cannot answer for an old name and load the old code.
"""
from __future__ import annotations

import sys

# Old module prefix -> new one; the longest matching prefix wins (`fastfreeze.continual.suggest.rule`
# -> `fastfreeze.lab.suggest.rule`, `fastfreeze.continual.runner` -> `fastfreeze.lab.continual.runner`).
MOVED = {
    "fastfreeze.continual": "fastfreeze.lab.continual",
    "fastfreeze.continual.suggest": "fastfreeze.lab.suggest",
    "fastfreeze.continual.safety_demo": "fastfreeze.lab.safety.demo",
    "fastfreeze.continual.safety_world": "fastfreeze.lab.safety.world",
    "fastfreeze.continual.safety_world_eval": "fastfreeze.lab.safety.world_eval",
    "fastfreeze.continual.safety_world_report": "fastfreeze.lab.safety.world_report",
    "fastfreeze.safety": "fastfreeze.lab.refusals",
    "fastfreeze.data.safety_synthetic": "fastfreeze.lab.safety.synthetic",
    "fastfreeze.data.safety_world": "fastfreeze.lab.safety.world_data",
    "fastfreeze.cli.continual": "fastfreeze.lab.continual.cli",
    "fastfreeze.cli.demo": "fastfreeze.lab.continual.cli_demo",
    "fastfreeze.cli.demo_checkpoint": "fastfreeze.lab.continual.cli_demo_checkpoint",
    "fastfreeze.cli.recover": "fastfreeze.lab.continual.cli_recover",
    "fastfreeze.cli.orthogonality": "fastfreeze.lab.continual.cli_orthogonality",
    "fastfreeze.cli.suggest_k": "fastfreeze.lab.suggest.cli",
    "fastfreeze.cli.safety": "fastfreeze.lab.safety.cli",
    "fastfreeze._tiny_models": "fastfreeze.testing.tiny_models",
}


_LONGEST_FIRST = sorted(MOVED, key=len, reverse=True)


def new_name(old: str) -> str | None:
    """The module `old` moved to, or None: `new_name("fastfreeze.continual.runner") == "fastfreeze.lab.continual.runner"`."""
    if not old.startswith("fastfreeze."):  # the finder sees every import of the process: leave others at once
        return None
    for prefix in _LONGEST_FIRST:
        if old == prefix or old.startswith(prefix + "."):
            return MOVED[prefix] + old[len(prefix):]
    return None


class MovedModuleError(ModuleNotFoundError):
    """An old lab path was imported; the message names the new one."""


class MovedFinder:
    """A meta-path finder that answers only for moved names, and answers with an error naming the new path."""

    @staticmethod
    def find_spec(fullname, path=None, target=None):
        new = new_name(fullname)
        if new is None:
            return None
        # Python imports a package before its modules, so `fastfreeze.continual.safety_world` fails here on
        # `fastfreeze.continual`: name where its modules went when they did not all go to one place.
        apart = [f"{k} -> {v}" for k, v in MOVED.items() if k.startswith(fullname + ".") and v != new + k[len(fullname):]]
        where = f" (and {', '.join(apart)})" if apart else ""
        raise MovedModuleError(f"{fullname} moved to {new}{where}; import that instead (docs/layout.md)", name=fullname)


def install() -> None:
    """Put the finder first in `sys.meta_path`, once (idempotent); called when `fastfreeze` is imported."""
    if not any(isinstance(f, MovedFinder) for f in sys.meta_path):
        sys.meta_path.insert(0, MovedFinder())
