"""suggest-k's rule on constructed evidence: the smallest eligible depth within the tie of the best, and its refusals."""
from __future__ import annotations

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
    assert s["k"] == 2  # k3 protects most but learns too little; k1 is 5 points below k2
    assert [r["eligible"] for r in s["rows"]] == [False, True, True, True, False]
    assert suggest(p, learn_min=0.6, tie=0.06)["k"] == 1  # within the tie the shallower depth wins
    assert suggest(p, learn_min=0.2, tie=0.02)["k"] == 3  # k3 is eligible at a lower threshold
    assert suggest(p, learn_min=0.99, tie=0.02)["k"] == 0 and "no depth" in suggest(p, 0.99, 0.02)["reason"]


def test_rule_refuses_a_probe_that_learned_nothing():
    with pytest.raises(ValueError, match="raise --steps or --learning-rate"):
        suggest(_probe([0.4, 0.5], [4.0, 4.1]))


def test_markdown_has_one_row_per_depth_and_marks_the_suggestion():
    p = _probe([0.40, 0.50, 0.90, 0.95, 0.99], [2.0, 2.1, 2.3, 2.6, 3.4])
    p.update(settings={"steps": 5, "learning_rate": 1e-3, "batch_size": 4, "energy": 0.99}, per_layer=[
        {"layer": "0", "old_update": 0.1, "new_update": 0.2, "flat_cos": -0.5, "mean_cos": 0.3, "random_cos": 0.2,
         "cos_over_random": 1.5}])
    text = markdown({"probe": p, "suggestion": suggest(p, learn_min=0.6, tie=0.02)})
    rows = [line for line in text.splitlines() if line.startswith(("| none", "| k="))]
    assert len(rows) == 5 and rows[3].startswith("| k=2 |") and rows[3].endswith("**<- suggested** |")
    assert sum("suggested" in r for r in rows) == 1 and "| 0 | 0.1 | 0.2 | -0.500 | 0.3 | 0.2 | 1.50 |" in text
