"""fastfreeze._moved: every old lab path fails with a message naming a new path that exists; other imports are untouched."""
from __future__ import annotations

import importlib
import importlib.util
import subprocess
import sys

import pytest

import fastfreeze  # noqa: F401  (installs the finder)
from fastfreeze import _moved


@pytest.mark.parametrize("old", sorted(_moved.MOVED))
def test_every_old_path_names_a_new_module_that_exists_and_the_old_one_is_gone(old):
    new = _moved.new_name(old)
    assert importlib.util.find_spec(new) is not None, new
    with pytest.raises(_moved.MovedModuleError, match=new.replace(".", r"\.")):
        importlib.import_module(old)


@pytest.mark.parametrize("old,new", [
    ("fastfreeze.continual.runner", "fastfreeze.lab.continual.runner"),
    ("fastfreeze.continual.suggest.rule", "fastfreeze.lab.suggest.rule"),          # the longest prefix wins
    ("fastfreeze.continual.safety_world_report", "fastfreeze.lab.safety.world_report"),
    ("fastfreeze.safety.keywords", "fastfreeze.lab.refusals.keywords"),
])
def test_a_module_of_a_moved_package_maps_to_a_module_that_exists(old, new):
    assert _moved.new_name(old) == new
    assert importlib.util.find_spec(new) is not None


def test_a_module_under_a_moved_package_fails_naming_where_its_siblings_went():
    # Python imports `fastfreeze.continual` first, so that is the name that fails; the message says where
    # the modules that did not follow it went.
    with pytest.raises(_moved.MovedModuleError) as err:
        importlib.import_module("fastfreeze.continual.safety_world")
    assert "fastfreeze.continual.safety_world -> fastfreeze.lab.safety.world" in str(err.value)


@pytest.mark.parametrize("name", ["fastfreeze.cli.verify", "fastfreeze.data.collate", "fastfreeze.continual_x",
                                  "fastfreeze.lab.continual.runner", "json"])
def test_names_that_did_not_move_are_not_answered(name):
    assert _moved.new_name(name) is None
    assert _moved.MovedFinder.find_spec(name) is None


def test_install_is_idempotent_and_puts_the_finder_first():
    _moved.install()
    _moved.install()
    finders = [f for f in sys.meta_path if isinstance(f, _moved.MovedFinder)]
    assert len(finders) == 1 and sys.meta_path[0] is finders[0]


def test_python_dash_m_with_an_old_command_path_names_the_new_one():
    run = subprocess.run([sys.executable, "-m", "fastfreeze.cli.demo_checkpoint", "check"],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode != 0
    assert "fastfreeze.lab.continual.cli_demo_checkpoint" in run.stderr, run.stderr
