"""The package's layout rules, checked: the import contracts (layers, no cycles) hold and catch a deliberate cycle,
function-level imports only for optional dependencies, small files and functions with a docstring, a test per module."""
from __future__ import annotations

import ast
import importlib.util
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "fastfreeze"
MODULES = sorted(p for p in PACKAGE.rglob("*.py"))

# Modules imported inside functions only: optional dependencies (a missing one breaks only what needs it,
# and triton must be imported after TRITON_INTERPRET is set), and matplotlib (headless backend, plots only).
LAZY_ALLOWED = {"trl", "peft", "csrc_triton", "triton", "matplotlib", "psutil",
                "fastfreeze.integrations.trl",   # TRL, through `fastfreeze.FastFreezeSFTTrainer`
                "fastfreeze.continual.plots"}    # matplotlib
# The command line imports the library inside each command, so `fastfreeze <command> --help` stays fast.
LAZY_ANYTHING = ("cli",)
LONG_MARK = "Long because"  # a file over 400 lines or a function over 60 lines says why in its docstring
# Modules whose tests live elsewhere, and why.
TESTED_ELSEWHERE = {
    "kernels.py": "tests/kernels/test_model_swaps.py (next to the kernel tests)",
}


def _lint_imports(cwd: Path) -> subprocess.CompletedProcess:
    exe = shutil.which("lint-imports")
    assert exe, "import-linter is not installed: pip install -e '.[test]'"
    return subprocess.run([exe, "--no-cache"], cwd=cwd, capture_output=True, text=True, timeout=300)


def test_import_contracts_hold():
    run = _lint_imports(ROOT)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "Contracts: 2 kept, 0 broken." in run.stdout, run.stdout


@pytest.mark.parametrize("importer,line,broken", [
    # config (bottom layer) importing the trainer: a layer violation and a cycle (trainer imports config)
    ("config.py", "from fastfreeze import trainer",
     ["fastfreeze.config is not allowed to import fastfreeze.trainer:", "- .config -> .trainer (1 import)"]),
    # two modules of one layer importing each other: no layer is crossed, the cycle alone breaks a contract
    ("cache/store.py", "from fastfreeze.cache import collator",
     ["No cycles are allowed in fastfreeze.cache.", "- .store -> .collator (1 import)"]),
])
def test_a_deliberate_cycle_breaks_a_contract(tmp_path, importer, line, broken):
    shutil.copytree(PACKAGE, tmp_path / "fastfreeze", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    with open(tmp_path / "fastfreeze" / importer, "a") as f:
        f.write(f"\n{line}  # deliberate cycle\n")
    run = _lint_imports(tmp_path)
    assert run.returncode == 1, run.stdout + run.stderr
    assert "BROKEN" in run.stdout and all(b in run.stdout for b in broken), run.stdout


def _function_imports(tree: ast.AST):
    for fn in ast.walk(tree):
        if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
            for node in ast.walk(fn):
                if isinstance(node, ast.Import):
                    yield node.lineno, [a.name for a in node.names]
                elif isinstance(node, ast.ImportFrom):
                    yield node.lineno, [("." * node.level) + (node.module or "")]


def _absolute(name: str, module: Path) -> str:
    if not name.startswith("."):
        return name
    level = len(name) - len(name.lstrip("."))
    parts = list(module.relative_to(ROOT).with_suffix("").parts)  # a package's __init__ counts as a module in it
    base = parts[: len(parts) - level]
    return ".".join(base + [name.lstrip(".")]).rstrip(".")


def test_function_level_imports_only_for_optional_dependencies():
    bad = []
    for path in MODULES:
        rel = path.relative_to(PACKAGE)
        for lineno, names in _function_imports(ast.parse(path.read_text())):
            for name in names:
                full = _absolute(name, path)
                if full.startswith("fastfreeze") and importlib.util.find_spec(full) is None:
                    bad.append(f"fastfreeze/{rel}:{lineno} imports {full}, which does not exist")  # lint-imports skips it
                lazy_ok = rel.parts[0] in LAZY_ANYTHING or full in LAZY_ALLOWED or full.split(".")[0] in LAZY_ALLOWED
                if not lazy_ok:
                    bad.append(f"fastfreeze/{rel}:{lineno} imports {full} inside a function")
    assert not bad, "\n".join(bad)


def test_files_and_functions_are_small_and_say_what_they_are():
    problems = []
    for path in MODULES:
        rel, text = path.relative_to(ROOT), path.read_text()
        tree = ast.parse(text)
        doc = ast.get_docstring(tree) or ""
        if not doc.strip():
            problems.append(f"{rel}: no one-line docstring at the top")
        if len(text.splitlines()) > 400 and LONG_MARK not in doc:
            problems.append(f"{rel}: {len(text.splitlines())} lines")
        for fn in ast.walk(tree):
            if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = fn.end_lineno - fn.lineno + 1
                if length > 60 and LONG_MARK not in (ast.get_docstring(fn) or ""):
                    problems.append(f"{rel}:{fn.lineno} {fn.name}: {length} lines")
    assert not problems, "\n".join(problems)


def _test_file(rel: Path) -> Path:
    """tests/<same path>/test_<module>.py; a leading underscore is dropped (_io.py -> test_io.py)."""
    return ROOT / "tests" / rel.parent / f"test_{rel.stem.lstrip('_')}.py"


def test_every_module_has_its_own_test_file():
    missing = []
    for path in MODULES:
        rel = path.relative_to(PACKAGE)
        if rel.name in ("__init__.py", "__main__.py", "_version.py") or str(rel) in TESTED_ELSEWHERE:
            continue
        if not _test_file(rel).is_file():
            missing.append(f"fastfreeze/{rel}: no {_test_file(rel).relative_to(ROOT)}")
    assert not missing, "\n".join(missing)
    for rel, where in TESTED_ELSEWHERE.items():
        assert (ROOT / where.split(" ")[0]).is_file(), where


def test_the_tree_reads_like_the_architecture():
    """The top of the package: the core (freeze -> prefix -> boundary cache -> suffix kernels -> trainer),
    its private helpers, and one folder per concern built on it."""
    top = sorted(p.name for p in PACKAGE.iterdir() if not p.name.startswith((".", "__pycache__")))
    assert top == sorted([
        "__init__.py", "_hf_compat.py", "_io.py", "_patch.py", "_version.py", "adapters.py", "cache", "cli",
        "config.py", "continual", "data", "families.py", "freeze.py", "integrations", "kernels.py", "placement.py", "prefix.py",
        "probe.py", "runtime.py", "safety", "trainer.py", "verify",
    ]), top
