"""FLOP model: its predictions match the committed cpu-small measurements within 5%, and its structure is what the docs say."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks.train import flop_model
from benchmarks.train import presets as tp

RESULTS = Path(__file__).resolve().parents[3] / "benchmarks" / "results" / "bench_train_cpu-small.json"


def test_predictions_match_the_committed_cpu_small_run():
    """benchmarks/results/bench_train_cpu-small.json (2026-11-26, 2-core CPU): every arm's measured step/naive
    ratio is within 5% of the prediction (main arms, both checkpointing modes, and the k sweep)."""
    result = json.loads(RESULTS.read_text())
    preset = tp.PRESETS["cpu-small"]
    checked = 0
    for r in result["arms"]:
        if r.get("step_vs_naive") and r["kind"] != "naive":
            pred = flop_model.predicted_ratio(preset, r["kind"], r["k"], r["ckpt"])
            assert pred == pytest.approx(r["step_vs_naive"], rel=0.05), r["name"]
            assert r.get("predicted_step_vs_naive") == pytest.approx(pred), "report not re-rendered with predictions"
            checked += 1
    assert checked >= 18


@pytest.mark.parametrize("preset", ["cpu-small", "gpu-1b", "gpu-8b-slice"])
def test_structure(preset):
    p = tp.PRESETS[preset]
    r = lambda kind, ckpt=False: flop_model.predicted_ratio(p, kind, p.k, ckpt)  # noqa: E731
    assert r("naive") == r("liger") == 1.0
    assert r("ff") == r("ff-cold") == 1.0  # no cache: same FLOPs as naive without checkpointing
    assert r("ff-warm") == r("floor") == r("floor-loop") < 1.0
    assert r("ff-warm", True) < r("ff", True) < 1.0  # checkpointing: naive walks and recomputes frozen blocks
    assert r("full") > 1.0
    # warm + ckpt gains more than warm alone: the frozen blocks' dX backward and recompute are gone too
    assert r("ff-warm", True) < r("ff-warm")


def test_gpu_predictions_quoted_in_the_performance_doc():
    readme = (Path(__file__).resolve().parents[3] / "docs" / "performance.md").read_text()
    for preset in ("gpu-1b", "gpu-8b-slice"):
        p = tp.PRESETS[preset]
        warm = flop_model.predicted_ratio(p, "ff-warm", p.k, False)
        warm_c = flop_model.predicted_ratio(p, "ff-warm", p.k, True)
        assert f"{1 / warm:.2f}x" in readme and f"{1 / warm_c:.2f}x" in readme, preset
