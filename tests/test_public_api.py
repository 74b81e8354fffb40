"""The package's front door: `__all__` imports without optional extras, the docs import only public names, and the
data-flow maps (fastfreeze/__init__.py's docstring, the README's table) name files and objects that exist."""
from __future__ import annotations

import importlib
import re
import subprocess
import sys
from pathlib import Path

import fastfreeze

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", ROOT / "examples" / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
LAZY_PUBLIC = {"FastFreezeSFTTrainer"}  # public, but outside __all__: it needs the optional TRL extra


def test_star_import_binds_every_public_name_without_trl():
    code = ("import sys; ns = {}; exec('from fastfreeze import *', ns); import fastfreeze; "
            "missing = [n for n in fastfreeze.__all__ if n not in ns]; "
            "assert not missing, missing; assert 'trl' not in sys.modules, 'star import pulled in TRL'")
    run = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr


def test_docs_import_only_public_names():
    public = set(fastfreeze.__all__) | LAZY_PUBLIC
    used = {}
    for doc in DOCS:
        for names in re.findall(r"from fastfreeze import ([\w, ]+)", doc.read_text()):
            for name in names.replace(" ", "").split(","):
                used.setdefault(name, doc.name)
    assert {"FastFreezeTrainer", "FreezeConfig"} <= set(used)
    assert not {n: d for n, d in used.items() if n not in public}, "docs import a private name from fastfreeze"
    assert LAZY_PUBLIC.isdisjoint(fastfreeze.__all__)
    assert all(getattr(fastfreeze, n) is not None for n in LAZY_PUBLIC)


def _resolves(dotted: str) -> bool:
    """`runtime.apply_freeze`, `integrations.trl`, `csrc_triton.linear_cross_entropy`: a module or a module's attribute."""
    for name in (f"fastfreeze.{dotted}", dotted):
        module, _, attr = name.rpartition(".")
        for mod, rest in ((name, None), (module, attr)):
            try:
                m = importlib.import_module(mod)
            except ImportError:
                continue
            if rest is None or hasattr(m, rest):
                return True
    return False


def test_the_data_flow_maps_name_what_exists():
    doc = fastfreeze.__doc__
    files = re.findall(r"`([\w/]+\.py|\w+/)`", doc)
    dotted = [d for d in re.findall(r"`(\w+(?:\.\w+)+)`", doc) if not d.endswith(".py")]
    assert {"freeze.py", "prefix.py", "probe.py", "cache/", "kernels.py"} <= set(files)
    assert [f for f in files if not (ROOT / "fastfreeze" / f).exists()] == []
    assert dotted and [d for d in dotted if not _resolves(d)] == []
    table = (ROOT / "README.md").read_text().split("## How it works", 1)[1]
    paths = re.findall(r"`((?:fastfreeze|csrc_triton)/[\w/.]*)`", table)
    assert len(paths) >= 7 and [p for p in paths if not (ROOT / p).exists()] == []
