"""Smoke test of benchmarks.placement.bench: the seed-snippet arm and the FastFreezeTrainer arms train the tiny shape to the same losses and the report renders."""
from __future__ import annotations

from benchmarks.placement import bench as bench_placement
from benchmarks.placement.report import render


def test_arms_agree_and_report_renders():
    arms = [bench_placement.child(arm, "tiny", k=2, steps=2, rows=1, seq=16) for arm in ("seed", "ff-cache")]
    seed, ff = arms  # rows=1, steps=2: the second step is a cache hit
    assert len(seed["losses"]) == 2 and ff["losses"] == seed["losses"]
    assert ff["kernel_set"] == "torch" and ff["device"] == "cpu" and ff["probe_s"] is not None and ff["cache_hits"] == 1
    for r in arms:
        # RSS is sampled, not a high-water mark, and freed pages may leave it in any order (run in one
        # process after other tests it was seen to drop 0.15 MB): only that each reading was taken.
        assert min(r["rss_before_construct_gb"], r["rss_constructed_gb"], r["rss_end_gb"]) > 0 and len(r["step_s"]) == 2
    md = render({"shape": "tiny", "spec": bench_placement.SHAPES["tiny"], "k": 2, "steps": 2, "rows": 1, "seq": 16,
                 "machine": bench_placement._machine(), "arms": arms})
    assert "| ff-cache |" in md and md.count("| True |") == 2
