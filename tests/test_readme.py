"""The README's supported-models table says what the committed compatibility sweep measured, and CI reruns it."""
from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TABLE = re.compile(r"<!-- compat:begin.*?-->\n(.*?)<!-- compat:end -->", re.S)


def _readme_rows() -> dict[str, str]:
    block = TABLE.search((ROOT / "README.md").read_text()).group(1)
    rows = {}
    for line in block.splitlines()[2:]:
        cells = [c.strip() for c in line.strip("|").split("|")]
        rows[cells[1].strip("`")] = cells[2]
    return rows


def _committed() -> dict:
    (path,) = sorted((ROOT / "benchmarks" / "results").glob("compat_transformers-*.json"))
    return json.loads(path.read_text())


def test_readme_classes_match_the_committed_sweep():
    data = _committed()
    by_type = {r["type"]: r for r in data["results"]}
    rows = _readme_rows()
    assert len(rows) >= 20
    wrong = {t: (c, by_type.get(t, {}).get("class")) for t, c in rows.items() if by_type.get(t, {}).get("class") != c}
    assert not wrong, f"README vs benchmarks/results table (README, table): {wrong}"


def test_committed_sweep_has_no_different_and_no_crash_and_readme_counts_it():
    data = _committed()
    counts = data["counts"]
    assert counts.get("different", 0) == 0 and counts.get("crash", 0) == 0
    text = " ".join((ROOT / "README.md").read_text().split())  # line breaks do not matter
    for cls, phrase in (("exact", "types exact"), ("exact without cache", "exact without cache"),
                        ("refused", "refused"), ("not applicable", "not applicable")):
        assert f"{counts.get(cls, 0)} {phrase}" in text, cls


def test_every_readme_family_is_rerun_in_ci():
    # The CI subset as the sweep's own command line reports it (tests outside tests/benchmarks/ import no benchmarks).
    run = subprocess.run([sys.executable, "-m", "benchmarks.compat", "--subset", "ci", "--list"], cwd=ROOT,
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    ci = set(run.stdout.split())
    assert len(ci) >= 20, run.stdout
    assert set(_readme_rows()) <= ci, sorted(set(_readme_rows()) - ci)
