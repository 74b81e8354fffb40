"""Nothing in the repository shadows an installed package: no code edits sys.path, importing every benchmark and
test helper leaves it as it was, and no folder a test run can import as a top-level name is an installed package.

Why: benchmarks/cache/read.py once put benchmarks/ on sys.path, so `import kernels` (transformers 5.25's new
dependency) found benchmarks/kernels/ and every later model import failed (2026-12-07)."""
from __future__ import annotations

import ast
import importlib.metadata
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OWN_DISTRIBUTION = "fastfreeze"  # installs fastfreeze/ and csrc_triton/ (pyproject.toml)
TREES = ("fastfreeze", "csrc_triton", "benchmarks", "tests", "examples")
SYS_PATH_EDITS = {"insert", "append", "extend", "remove", "pop", "clear", "__setitem__"}


def _python_files(tree: str) -> list[Path]:
    return sorted(p for p in (ROOT / tree).rglob("*.py") if "__pycache__" not in p.parts)


def _is_sys_path(node: ast.AST) -> bool:
    return (isinstance(node, ast.Attribute) and node.attr == "path" and isinstance(node.value, ast.Name)
            and node.value.id == "sys")


def _sys_path_edits(path: Path) -> list[str]:
    """Calls of sys.path's editing methods (SYS_PATH_EDITS) and assignments to sys.path or sys.path[i], with their lines."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and _is_sys_path(node.func.value) \
                and node.func.attr in SYS_PATH_EDITS:
            found.append(f"{path.relative_to(ROOT)}:{node.lineno}")
        targets = node.targets if isinstance(node, ast.Assign) else [getattr(node, "target", None)]
        for t in targets:
            if _is_sys_path(t) or (isinstance(t, ast.Subscript) and _is_sys_path(t.value)):
                found.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    return found


def test_no_code_in_the_repository_edits_sys_path():
    edits = [e for tree in TREES for p in _python_files(tree) for e in _sys_path_edits(p)]
    assert not edits, f"code that edits sys.path (run as `python -m ...`; give workers PYTHONPATH): {edits}"


def test_the_sys_path_check_sees_an_edit(tmp_path):
    """The check above is not vacuous: each way of editing sys.path is found."""
    # Built from parts, so that `git grep` for an edit of sys.path finds none in the repository, this file included.
    edits = [f"sys.path.{method}(0, 'x')" for method in ("insert", "append")] + ["sys.path = []", "sys.path[0] = 'x'"]
    for line in edits:
        probe = ROOT / "tests" / f"_probe_{os.getpid()}.py"
        try:
            probe.write_text(f"import sys\n{line}\n")
            assert _sys_path_edits(probe), line
        finally:
            probe.unlink()


def _helper_modules() -> list[str]:
    """Every module of the benchmarks/ and tests/ packages but `__main__` (it runs a benchmark) and test files."""
    names = []
    for tree in ("benchmarks", "tests"):
        for p in _python_files(tree):
            if p.name == "__main__.py" or (tree == "tests" and p.name.startswith("test_")):
                continue
            if not all((d / "__init__.py").is_file() for d in (ROOT / q for q in p.relative_to(ROOT).parents) if d != ROOT):
                continue  # not importable as a module: a run's script kept beside its results
            rel = p.relative_to(ROOT).with_suffix("")
            names.append(".".join(rel.parts[:-1] if p.name == "__init__.py" else rel.parts))
    return names


def test_importing_every_benchmark_and_test_helper_leaves_sys_path_unchanged():
    modules = _helper_modules()
    assert "benchmarks.cache.read" in modules and "tests._helpers" in modules and "tests.conftest" in modules
    script = ("import importlib, json, sys\nbefore, changed = list(sys.path), []\n"
              f"for name in {modules!r}:\n"
              "    importlib.import_module(name)\n"
              "    if sys.path != before:\n"
              "        changed.append([name, [p for p in sys.path if p not in before]])\n"
              "        before = list(sys.path)\n"
              "print(json.dumps(changed))\n")
    env = dict(os.environ, PYTHONPATH=str(ROOT), TRITON_INTERPRET="1")
    run = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True, text=True,
                         timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    changed = json.loads(run.stdout.strip().splitlines()[-1])
    assert changed == [], f"importing these modules added to sys.path: {changed}"


def _top_level_names(folder: Path) -> set[str]:
    """What `import NAME` could find in a folder on sys.path: packages (folders with .py files) and modules."""
    names = set()
    for child in folder.iterdir():
        if child.suffix == ".py":
            names.add(child.stem)
        elif child.is_dir() and child.name.isidentifier() and any(child.glob("*.py")):
            names.add(child.name)
    return names


def _clashes(folders: set[Path], installed: dict[str, list[str]]) -> dict[str, list[str]]:
    out = {}
    for folder in folders:
        for name in _top_level_names(folder):
            others = set(installed.get(name, ())) - {OWN_DISTRIBUTION}
            if others:
                out[f"{folder.relative_to(ROOT)}/{name}"] = sorted(others)
    return out


def test_no_folder_on_this_runs_sys_path_shadows_an_installed_package():
    """Every sys.path entry inside the repository (pytest puts the root there) offers only names that no
    other installed distribution provides as its top-level module (`kernels` is transformers' since 5.25)."""
    entries = {Path(p or ".").resolve() for p in sys.path}
    env = Path(sys.prefix).resolve()  # a virtual environment made inside the checkout (.venv) is not the repository's
    inside = {p for p in entries if p.is_dir() and (p == ROOT or ROOT in p.parents) and env not in (p, *p.parents)
              and "site-packages" not in p.parts}
    assert ROOT in inside  # how tests import `tests.` and `benchmarks.`
    clashes = _clashes(inside, importlib.metadata.packages_distributions())
    assert not clashes, f"repository folders that shadow installed packages (rename them): {clashes}"


def test_the_shadow_check_sees_benchmarks_on_sys_path():
    """benchmarks/ on sys.path was the 2026-12-07 failure: it offers `kernels`, an installed package's name."""
    assert _clashes({ROOT / "benchmarks"}, {"kernels": ["kernels"]}) == {"benchmarks/kernels": ["kernels"]}
    assert _clashes({ROOT}, {"fastfreeze": [OWN_DISTRIBUTION], "kernels": ["kernels"]}) == {}
