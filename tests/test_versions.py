"""Declared = tested: pyproject.toml's lower bounds are the pins of .ci/constraints-lowest.txt (what `bash .ci/lowest` runs) and docs/versions.md's lowest column."""
from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("torch", "triton", "transformers", "datasets", "accelerate", "tokenizers", "safetensors", "trl", "peft")


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
