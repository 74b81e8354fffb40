"""The package's layout rules, checked: the import contracts (layers, no cycles, package -> benchmarks -> tests one way)
hold and catch deliberate breaks, function-level imports only for optional dependencies, small files and functions with
a docstring, a test per module, and tests/ laid out like the packages it tests."""
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
BENCHMARKS = sorted(p for p in (ROOT / "benchmarks").rglob("*.py"))
TREES = ("fastfreeze", "benchmarks", "tests")  # import-linter's root packages (pyproject.toml)

# Modules imported inside functions only: optional dependencies (a missing one breaks only what needs it,
# and triton must be imported after TRITON_INTERPRET is set), and matplotlib (headless backend, plots only).
LAZY_ALLOWED = {"trl", "peft", "csrc_triton", "triton", "matplotlib", "psutil", "deepspeed",
                "fastfreeze.integrations.trl",   # TRL, through `fastfreeze.FastFreezeSFTTrainer`
                "fastfreeze.lab.continual.plots"}  # matplotlib
# The command line imports the code inside each command, so `fastfreeze <command> --help` stays fast: the
# library's commands are the package cli/, the lab's sit beside their experiment as cli.py or cli_<command>.py.
LAZY_ANYTHING = ("cli",)


def _is_command_module(rel: Path) -> bool:
    return rel.parts[0] in LAZY_ANYTHING or (rel.parts[0] == "lab" and rel.stem.split("_")[0] == "cli")
LONG_MARK = "Long because"  # a file over 400 lines or a function over 60 lines says why in its docstring
# Modules whose tests live elsewhere, and why.
TESTED_ELSEWHERE: dict[str, str] = {}


def _lint_imports(cwd: Path) -> subprocess.CompletedProcess:
    exe = shutil.which("lint-imports")
    assert exe, "import-linter is not installed: pip install -e '.[test]'"
    return subprocess.run([exe, "--no-cache"], cwd=cwd, capture_output=True, text=True, timeout=300)


def test_import_contracts_hold():
    run = _lint_imports(ROOT)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "Contracts: 8 kept, 0 broken." in run.stdout, run.stdout


@pytest.mark.parametrize("importer,line,broken", [
    # config (bottom layer) importing the trainer: a layer violation and a cycle (trainer imports config)
    ("fastfreeze/config.py", "from fastfreeze import trainer",
     ["fastfreeze.config is not allowed to import fastfreeze.trainer:", "- .config -> .trainer (1 import)"]),
    # two modules of one layer importing each other: no layer is crossed, the cycle alone breaks a contract
    ("fastfreeze/cache/store.py", "from fastfreeze.cache import collator",
     ["No cycles are allowed in fastfreeze.cache.", "- .store -> .collator (1 import)"]),
    # the type-only cycle benchmarks had (step timing <-> the arms), back again
    ("benchmarks/train/roundrobin.py", "from benchmarks.train import arms",
     ["No cycles are allowed in benchmarks.train.", "- .roundrobin -> .arms (1 import)"]),
    # a lower concern reaching up: the training benchmark importing the memory benchmark that runs it
    ("benchmarks/train/bench.py", "from benchmarks.memory import bench",
     ["benchmarks.train is not allowed to import benchmarks.memory:"]),
    # the library importing the lab (the trainer reaching for the continual runner): both the named contract and
    # the layers; and the lab's runner importing an experiment built on it
    ("fastfreeze/trainer.py", "from fastfreeze.lab.continual import metrics",
     ["the library never imports the lab BROKEN", "fastfreeze.trainer -> fastfreeze.lab.continual.metrics"]),
    ("fastfreeze/lab/continual/metrics.py", "from fastfreeze.lab.safety import world_report",
     ["fastfreeze.lab.continual is not allowed to import fastfreeze.lab.safety:"]),
    # the package importing its tests; a package test importing a benchmark
    ("fastfreeze/config.py", "from tests import _helpers", ["the package imports neither its benchmarks nor its tests"]),
    ("tests/test_io.py", "from benchmarks.train import presets",
     ["only tests/benchmarks/ imports benchmarks", "tests.test_io -> benchmarks.train.presets"]),
])
def test_a_deliberate_cycle_breaks_a_contract(tmp_path, importer, line, broken):
    for tree in TREES:
        shutil.copytree(ROOT / tree, tmp_path / tree, ignore=shutil.ignore_patterns("__pycache__", "results"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    with open(tmp_path / importer, "a") as f:
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
                lazy_ok = _is_command_module(rel) or full in LAZY_ALLOWED or full.split(".")[0] in LAZY_ALLOWED
                if not lazy_ok:
                    bad.append(f"fastfreeze/{rel}:{lineno} imports {full} inside a function")
    assert not bad, "\n".join(bad)


def test_files_and_functions_are_small_and_say_what_they_are():
    problems = []
    for path in MODULES + BENCHMARKS:
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
    """The top of the package: the library's core (freeze -> prefix -> boundary cache -> suffix kernels -> trainer),
    its private helpers, one folder per concern built on it, and lab/ (the paper's experiments) apart; helpers for
    tests only are named as such (testing/)."""
    top = sorted(p.name for p in PACKAGE.iterdir() if not p.name.startswith((".", "__pycache__")))
    assert top == sorted([
        "__init__.py", "_dist.py", "_hf_compat.py", "_io.py", "_moved.py", "_patch.py", "_timing.py", "_version.py",
        "adapters.py", "cache", "cli", "config.py", "data", "errors.py", "estimate", "families.py", "freeze.py", "integrations",
        "kernel_registry.py", "kernels.py", "lab", "placement.py", "prefix.py", "probe.py", "runtime.py", "standin.py",
        "step.py", "testing", "tolerance.py", "trace.py", "trainer.py", "verify",
    ]), top
    lab = sorted(p.name for p in (PACKAGE / "lab").iterdir() if p.is_dir() and p.name != "__pycache__")
    assert lab == ["continual", "refusals", "safety", "suggest"], lab


def _packages(top: Path) -> set[Path]:
    """Every package folder under `top` (itself included), relative to `top`."""
    return {p.parent.relative_to(top) for p in top.rglob("__init__.py") if "__pycache__" not in p.parts}


def test_tests_mirror_the_packages():
    """tests/<path>/ tests fastfreeze/<path>/; tests/csrc_triton/ and tests/benchmarks/<path>/ test those trees.
    parity/ holds the cross-cutting contract (fastfreeze against the plain recipe), not one module."""
    mirrored = _packages(PACKAGE) | {Path("csrc_triton") / p for p in _packages(ROOT / "csrc_triton")}
    mirrored |= {Path("benchmarks") / p for p in _packages(ROOT / "benchmarks")}
    strays = sorted(str(p) for p in _packages(ROOT / "tests") - mirrored - {Path("parity")})
    assert not strays, f"test folders with no package folder of that path: {strays}"
    loose = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "tests").rglob("test_*.py")
                   if p.parent != ROOT / "tests" and not (p.parent / "__init__.py").is_file())
    assert not loose, f"test files outside a test package (name clashes across folders): {loose}"
