"""`fastfreeze <command>`: the one table of subcommands, each a module with main(argv); usage and unknown commands."""
from __future__ import annotations

import importlib

from fastfreeze.cli import SUBCOMMANDS, main

LIBRARY_COMMANDS = {"verify", "sft", "estimate"}  # the rest are the lab's (docs/layout.md)


def test_every_subcommand_is_a_cli_module_with_main_and_help(capsys):
    assert main(["--help"]) == 0
    usage = capsys.readouterr().out
    for name, (module, help_text) in SUBCOMMANDS.items():
        if name in LIBRARY_COMMANDS:
            assert module == f"fastfreeze.cli.{name.replace('-', '_')}"
        else:  # a lab command sits beside its experiment: fastfreeze.lab.<experiment>.cli or .cli_<command>
            assert module.startswith("fastfreeze.lab.") and module.rsplit(".", 1)[1].split("_")[0] == "cli", module
        assert callable(importlib.import_module(module).main)
        assert name in usage and help_text in usage
    assert LIBRARY_COMMANDS < set(SUBCOMMANDS)


def test_unknown_command_exits_2(capsys):
    assert main(["train"]) == 2
    assert "unknown command 'train'" in capsys.readouterr().err
