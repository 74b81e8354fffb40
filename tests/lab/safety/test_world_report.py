"""fastfreeze.lab.safety.world_report: mean and spread over seeds, missing points, the markdown rows."""
import pytest

from fastfreeze.lab.safety.world_report import arm_label, format_world_table, summarize_world

RATES = ("jailbreak", "leak", "persona", "helpful")


def _rates(x: float) -> dict:
    return {s: {m: x for m in RATES} for s in ("no_system", "aoa_system")}


def _seed(x: float, matched_step) -> dict:
    evals = {"end": {"step": 4, **_rates(x)}}
    if matched_step is not None:
        evals["matched"] = {"step": matched_step, **_rates(x)}
    arm = {"frozen_blocks": [0, 1, 2, 3, 4, 5, 10, 11], "identity_em": [0.0, 0.5, 0.75, 1.0], "evals": evals}
    return {"match_em": 0.7, "aligned": _rates(0.0), "arms": {"paper:freeze-6layers": arm}}


def test_mean_spread_and_a_seed_that_never_matched():
    summary = summarize_world({0: _seed(0.2, 3), 1: _seed(0.6, 2), 2: _seed(1.0, None)})
    arm = summary["arms"]["paper:freeze-6layers"]
    assert arm["end"]["no_system"]["leak"]["mean"] == pytest.approx(0.6)
    assert (arm["end"]["no_system"]["leak"]["min"], arm["end"]["no_system"]["leak"]["max"]) == (0.2, 1.0)
    matched = arm["matched"]
    assert matched["step"]["values"] == [3, 2, None] and matched["step"]["n"] == 2
    assert matched["identity_em"]["values"] == [0.75, 0.5, None]  # the EM after that step
    assert arm["paper_budget"]["step"] is None
    table = format_world_table(summary)
    assert "| as-ran freeze-6layers | 0,1,2,3,4,5,10,11 | matched | 2.5 [2-3] (2/3 seeds) | 62 [50-75] (2/3 seeds) |" in table
    assert "| as-ran freeze-6layers | 0,1,2,3,4,5,10,11 | paper_budget | n/a |" in table
    assert table.count("\n") == 2 + 3  # header, rule, aligned, three points


def test_arm_labels():
    assert [arm_label(a) for a in ("seq", "k3", "paper:freeze-3layers")] == [
        "SEQ", "Freeze k=3", "as-ran freeze-3layers"]
