"""Declared = tested: pyproject.toml's lower bounds are the pins of .ci/constraints-lowest.txt (what `bash .ci/lowest` runs) and docs/versions.md's lowest column."""
from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("torch", "triton", "transformers", "datasets", "accelerate", "tokenizers", "safetensors", "trl", "peft",
            "tqdm", "matplotlib", "pyyaml", "deepspeed", "numpy")


def _norm(version: str) -> tuple[int, ...]:
    parts = [int(p) for p in version.split(".")]
    while parts and parts[-1] == 0:
        parts.pop()
    return tuple(parts)


def declared() -> dict[str, tuple]:
    """Each package's `>=` bound in pyproject.toml (dependencies and the trl / peft extras)."""
    text = (ROOT / "pyproject.toml").read_text()
    return {m.group(1): _norm(m.group(2)) for m in re.finditer(r'"(\w+)>=([\d.]+)', text) if m.group(1) in PACKAGES}


def pinned() -> dict[str, tuple]:
    text = (ROOT / ".ci" / "constraints-lowest.txt").read_text()
    return {m.group(1): _norm(m.group(2)) for m in re.finditer(r"^(\w+)==([\d.]+)\s*$", text, re.M)}


def documented() -> dict[str, tuple]:
    """docs/versions.md's first table: package -> its "lowest tested" cell."""
    out = {}
    for line in (ROOT / "docs" / "versions.md").read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) >= 2 and cells[0].split(" ")[0] in PACKAGES and re.match(r"[\d.]+", cells[1]):
            out.setdefault(cells[0].split(" ")[0], _norm(re.match(r"[\d.]+", cells[1]).group(0)))
    return out


def mismatches() -> dict[str, tuple]:
    """package -> (pyproject bound, constraints pin, docs lowest) wherever the three differ."""
    bounds, pins, docs = declared(), pinned(), documented()
    return {p: (bounds.get(p), pins.get(p), docs.get(p)) for p in PACKAGES
            if bounds.get(p) is None or not bounds[p] == pins.get(p) == docs.get(p)}


def test_every_lower_bound_is_the_tested_lowest_version():
    wrong = mismatches()
    assert not wrong, f"pyproject.toml bound vs .ci/constraints-lowest.txt vs docs/versions.md: {wrong}"


def test_a_bound_nobody_ran_is_caught(monkeypatch):
    """The check can fail: pyproject declaring accelerate 1.15 while 1.16 is what ran."""
    read = Path.read_text

    def mutated(self, *a, **kw):
        text = read(self, *a, **kw)
        return text.replace('"accelerate>=1.16"', '"accelerate>=1.15"') if self.name == "pyproject.toml" else text

    monkeypatch.setattr(Path, "read_text", mutated)
    assert mismatches() == {"accelerate": ((1, 15), (1, 16), (1, 16))}


# ------------------------------------------------------------------ the tested lock (constraints.txt)
LOCK = ROOT / "constraints.txt"
EXTRAS_IN_LOCK = ("test", "trl", "peft", "deepspeed")  # what the README's test command installs


def _requirements() -> dict[str, str]:
    """Every requirement the README's commands install: name -> its `>=` bound ('' where it has none)."""
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    reqs = list(project["dependencies"])
    for extra in EXTRAS_IN_LOCK:
        reqs += project["optional-dependencies"][extra]
    out = {}
    for r in reqs:
        m = re.match(r"([A-Za-z0-9_.-]+)\s*(?:>=\s*([\d.]+))?", r)
        out[m.group(1).lower().replace("_", "-")] = m.group(2) or ""
    return out


def locked() -> dict[str, str]:
    lines = [ln.strip() for ln in LOCK.read_text().splitlines() if ln.strip() and not ln.startswith("#")]
    pins = dict(ln.split("==", 1) for ln in lines)
    return {name.lower().replace("_", "-"): version for name, version in pins.items()}


def lock_problems() -> list[str]:
    pins, problems = locked(), []
    for name, bound in _requirements().items():
        if name not in pins:
            problems.append(f"{name}: not pinned")
        elif bound and _norm(pins[name].split("+")[0]) < _norm(bound):
            problems.append(f"{name}: pinned {pins[name]} below the declared bound {bound}")
    return problems


def test_the_lock_pins_every_requirement_at_or_above_its_bound():
    assert lock_problems() == []
    assert "+" not in locked()["torch"]  # no local tag: the same pin fits PyPI's CUDA build on a GPU machine
    assert {"kernels", "huggingface-hub", "numpy"} <= locked().keys()  # transitive dependencies too


def test_a_requirement_missing_from_the_lock_is_caught(monkeypatch):
    read = Path.read_text
    monkeypatch.setattr(Path, "read_text", lambda self, *a, **kw: read(self, *a, **kw).replace("\ntrl==", "\n#trl==")
                        if self.name == "constraints.txt" else read(self, *a, **kw))
    assert lock_problems() == ["trl: not pinned"]


def test_the_readme_commands_and_ci_install_through_the_lock():
    readme = (ROOT / "README.md").read_text()
    commands = re.findall(r"```bash\n(.*?)\n```", readme.split("## Set up and run")[1].split("\n## ")[0], re.S)
    assert len(commands) == 2 and all("pip install -c constraints.txt -e " in c for c in commands), commands
    assert commands[0].endswith("fastfreeze demo") and commands[1].endswith("python -m pytest tests -q")
    assert ",".join(EXTRAS_IN_LOCK) in commands[1]
    ci = [ln for ln in (ROOT / ".ci" / "run").read_text().splitlines() if ln and not ln.startswith(("#", "set ", "cd "))]
    assert ci == [commands[1]], "`.ci/run` must run the README's test command verbatim"
