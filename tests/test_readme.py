"""The docs' supported-models table and the README's counts say what the committed compatibility sweep measured, and CI reruns it."""
from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]
MODELS_DOC = ROOT / "docs" / "models.md"  # the families table (the README links it and states the counts)
TABLE = re.compile(r"<!-- compat:begin.*?-->\n(.*?)<!-- compat:end -->", re.S)


def _table_rows() -> dict[str, str]:
    block = TABLE.search(MODELS_DOC.read_text()).group(1)
    rows = {}
    for line in block.splitlines()[2:]:
        cells = [c.strip() for c in line.strip("|").split("|")]
        rows[cells[1].strip("`")] = cells[2]
    return rows


def _committed() -> dict:
    """The newest transformers' sweep (older sweeps stay committed as the record of their day)."""
    sweeps = {Version(p.stem.split("-", 1)[1]): p for p in (ROOT / "benchmarks" / "results").glob("compat_transformers-*.json")}
    return json.loads(sweeps[max(sweeps)].read_text())


def test_docs_classes_match_the_committed_sweep():
    data = _committed()
    by_type = {r["type"]: r for r in data["results"]}
    rows = _table_rows()
    assert len(rows) >= 20
    wrong = {t: (c, by_type.get(t, {}).get("class")) for t, c in rows.items() if by_type.get(t, {}).get("class") != c}
    assert not wrong, f"docs/models.md vs benchmarks/results table (docs, table): {wrong}"


def test_committed_sweep_has_no_different_and_no_crash_and_readme_counts_it():
    data = _committed()
    counts = data["counts"]
    assert counts.get("different", 0) == 0 and counts.get("crash", 0) == 0
    text = " ".join((ROOT / "README.md").read_text().split())  # line breaks do not matter
    for cls, phrase in (("exact", "types exact"), ("exact without cache", "exact without cache"),
                        ("refused", "refused"), ("not applicable", "not applicable")):
        assert f"{counts.get(cls, 0)} {phrase}" in text, cls


def test_every_documented_family_is_rerun_in_ci():
    # The CI subset as the sweep's own command line reports it (tests outside tests/benchmarks/ import no benchmarks).
    run = subprocess.run([sys.executable, "-m", "benchmarks.compat", "--subset", "ci", "--list"], cwd=ROOT,
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    ci = set(run.stdout.split())
    assert len(ci) >= 20, run.stdout
    assert set(_table_rows()) <= ci, sorted(set(_table_rows()) - ci)


def test_readme_links_the_models_doc():
    assert "docs/models.md" in (ROOT / "README.md").read_text()


PERF = re.compile(r"<!-- perf:begin.*?-->\n(.*?)<!-- perf:end -->", re.S)


def test_readme_performance_ratios_are_the_committed_run():
    """Each ratio in the README's performance table is the committed cpu-small run's median step ratio."""
    result = json.loads((ROOT / "benchmarks" / "results" / "bench_train_cpu-small.json").read_text())
    measured = {(r["kind"], r["ckpt"]): r["step_vs_naive"] for r in result["arms"] if r["k"] == 6}
    block = PERF.search((ROOT / "README.md").read_text()).group(1)
    rows = [[c.strip() for c in line.strip("|").split("|")] for line in block.splitlines()[2:]]
    assert len(rows) >= 3
    for _, kind, plain, ckpt in rows:
        for cell, on in ((plain, False), (ckpt, True)):
            assert cell == f"{measured[(kind.strip('`'), on)]:.2f}x", (kind, on, cell)


def test_readme_demo_table_is_the_documented_one():
    """The README's demo table is a copy of docs/demo.md's (which names the committed run)."""
    readme = (ROOT / "README.md").read_text().splitlines()
    start = readme.index("| model state | Task 0 (held-out people B) | Task 1 |")
    end = next(i for i in range(start, len(readme)) if not readme[i].startswith("|"))
    rows = readme[start:end]
    doc = (ROOT / "docs" / "demo.md").read_text().splitlines()
    assert len(rows) >= 5 and all(line in doc for line in rows)


def _number_cells(lines: list[str]) -> list[list[str]]:
    """The percentage cells of each table row, in order (row labels may be worded differently)."""
    return [re.findall(r"\d+\.\d%", line) for line in lines if line.startswith("|") and "%" in line]


def test_readme_demo_table_is_the_committed_run():
    """The README's demo numbers are the newest committed demo run's (results.json), as the demo prints them."""
    from fastfreeze.lab.continual.report import format_table

    runs = sorted((ROOT / "benchmarks" / "results").glob("continual_demo_*/results.json"))
    printed = format_table(json.loads(runs[-1].read_text())).splitlines()
    readme = (ROOT / "README.md").read_text().splitlines()
    start = readme.index("| model state | Task 0 (held-out people B) | Task 1 |")
    end = next(i for i in range(start, len(readme)) if not readme[i].startswith("|"))
    assert len(_number_cells(readme[start:end])) == 5
    assert _number_cells(readme[start:end]) == _number_cells(printed), runs[-1]
