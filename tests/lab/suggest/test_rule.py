"""suggest-k on constructed evidence (the rule's pick, its refusals, no single k) and its measured hit rate, recomputed from the committed runs."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from fastfreeze.lab.suggest import markdown, suggest


def _probe(retention: list[float], losses: list[float], before: float = 4.0) -> dict:
    """A constructed probe result: SEQ then k = 0..len-2, with old-task first-token accuracy and new-task loss."""
    ks = [None, *range(len(retention) - 1)]
    arms = [{"k": k, "old_first_token": r, "old_exact_match": r, "new_loss": l} for k, r, l in zip(ks, retention, losses)]
    return {"new_loss_before": before, "arms": arms, "old_before": {"first_token": 1.0, "exact_match": 1.0}}


def test_rule_picks_the_smallest_depth_that_protects_as_well_as_any_that_learns():
    # learning shares (4 - loss) / 2: SEQ 1.0, k0 0.95, k1 0.85, k2 0.70, k3 0.30
    p = _probe([0.40, 0.50, 0.90, 0.95, 0.99], [2.0, 2.1, 2.3, 2.6, 3.4])
    s = suggest(p, learn_min=0.6, tie=0.02)
    assert s["rule_k"] == 2  # k3 protects most but learns too little; k1 is 5 points below k2
    assert [r["eligible"] for r in s["rows"]] == [False, True, True, True, False]
    assert suggest(p, learn_min=0.6, tie=0.06)["rule_k"] == 1  # within the tie the shallower depth wins
    assert suggest(p, learn_min=0.2, tie=0.02)["rule_k"] == 3  # k3 is eligible at a lower threshold
    assert suggest(p, 0.99, 0.02)["rule_k"] == 0 and "no depth" in suggest(p, 0.99, 0.02)["rule_reason"]
    assert all(suggest(p, lm, 0.02)["k"] is None for lm in (0.2, 0.6, 0.99))  # the rule's pick is never suggested


def test_rule_refuses_a_probe_that_learned_nothing():
    with pytest.raises(ValueError, match="raise --steps or --learning-rate"):
        suggest(_probe([0.4, 0.5], [4.0, 4.1]))


def test_markdown_has_one_row_per_depth_the_hit_rate_and_no_single_k():
    p = _probe([0.40, 0.50, 0.90, 0.95, 0.99], [2.0, 2.1, 2.3, 2.6, 3.4])
    p.update(settings={"steps": 5, "learning_rate": 1e-3, "batch_size": 4, "energy": 0.99}, per_layer=[
        {"layer": "0", "old_update": 0.1, "new_update": 0.2, "flat_cos": -0.5, "mean_cos": 0.3, "random_cos": 0.2,
         "cos_over_random": 1.5}])
    text = markdown({"probe": p, "suggestion": suggest(p, learn_min=0.6, tie=0.02)})
    rows = [line for line in text.splitlines() if line.startswith(("| none", "| k="))]
    assert len(rows) == 5 and rows[3] == "| k=2 | 95.0% | 95.0% | 2.600 | 70% | yes |"
    assert not any("suggested" in r for r in rows) and "| 0 | 0.1 | 0.2 | -0.500 | 0.3 | 0.2 | 1.50 |" in text
    assert "Hit rate at matched budgets (measured 2026-12-03, five_task_fair seeds 0, 1, 2): 0/3." in text
    assert "Suggested k: none; the only rule tried (below) picked k=1" in text
    assert "here it would pick k=2 (best eligible old first-token 95.0%), which is not a suggestion" in text


RESULTS = Path(__file__).resolve().parents[3] / "benchmarks" / "results"


def test_the_reported_hit_rate_is_the_one_the_committed_runs_give():
    """FAIR_HITS, printed by the command, recomputed: each fair seed's stored probe through the rule, its pick
    against that seed's matched-budget arms (a hit: among the best by Task-0 retention at matched accuracy)."""
    from fastfreeze.lab.suggest import compare
    from fastfreeze.lab.suggest.rule import FAIR_HITS

    picked, best, hits = [], [], 0
    for seed in FAIR_HITS["seeds"]:
        probe = json.loads((RESULTS / "suggest_k_2026-12-03" / f"five_fair_seed{seed}_suggest.json").read_text())["probe"]
        arms = json.loads((RESULTS / "continual_fair_2026-12-03" / f"seed{seed}" / "results.json").read_text())
        k = suggest(probe)["rule_k"]
        v = compare.compare(k, arms)["verdict"]
        picked.append(k)
        best.append([r["k"] for r in compare.compare(k, arms)["rows"] if r["best_retention"]])
        hits += v["among_best_retention"]
    assert picked == FAIR_HITS["picked"] and hits == FAIR_HITS["hits"] == 0
    assert best == [[b] for b in FAIR_HITS["best"]]
