"""suggest-k's comparison with a run's arms: best by ACC and by retention at matched later-task accuracy."""
from __future__ import annotations

import pytest

from fastfreeze.lab.suggest.compare import compare, markdown


def _results(arms: dict) -> dict:
    """A runner-shaped results.json: arm -> (k or None, accuracy matrix)."""
    out = {}
    for name, (k, R) in arms.items():
        strat = {"name": "seq"} if k is None else {"name": "freeze", "num_frozen_layers": k, "freeze_embeddings": True}
        out[name] = {"strategy": strat, "accuracy_matrix": R}
    # not comparable: other methods, and freeze sets matched by name patterns (the paper's as-ran sets)
    out["replay"] = {"strategy": {"name": "replay"}, "accuracy_matrix": [[0.9, None], [0.9, 0.9]]}
    out["asran"] = {"strategy": {"name": "paper_freeze", "patterns": ["layers.1"]}, "accuracy_matrix": [[0.9, None], [0.9, 0.9]]}
    out["asran2"] = {"strategy": {"name": "freeze", "num_frozen_layers": 1, "patterns": ["layers.1"]},
                     "accuracy_matrix": [[0.9, None], [0.9, 0.9]]}
    return {"arms": out}


def test_compare_finds_the_best_arms_both_ways():
    res = _results({"seq": (None, [[0.9, 0.0], [0.30, 0.99]]), "freeze1": (1, [[0.9, 0.0], [0.45, 0.96]]),
                    "freeze2": (2, [[0.9, 0.0], [0.50, 0.84]])})
    c = compare(1, res)
    assert [r["arm"] for r in c["rows"]] == ["seq", "freeze1", "freeze2"]
    assert c["verdict"]["among_best_acc"] and c["verdict"]["among_best_retention"]
    assert c["verdict"]["best_retention_arms"] == ["freeze1"]  # freeze2 keeps more but learns 15 points less
    c2 = compare(2, res)
    assert c2["verdict"]["best_acc_arms"] == ["freeze1"] and not c2["verdict"]["among_best_acc"]
    assert not c2["verdict"]["among_best_retention"]
    assert not compare(3, res)["verdict"]["arm_with_k"]
    with pytest.raises(ValueError, match="no SEQ arm"):
        compare(1, {"arms": {k: v for k, v in res["arms"].items() if k != "seq"}})


def test_markdown_says_plainly_when_the_rules_pick_is_not_among_the_best():
    res = _results({"seq": (None, [[0.9, 0.0], [0.30, 0.99]]), "freeze2": (2, [[0.9, 0.0], [0.40, 0.84]])})
    text = markdown(compare(2, res))
    assert "The rule's pick k=2: NOT among the best arms by ACC (seq)" in text
    assert "NOT among the best by Task-0 retention at matched later-task accuracy (seq)" in text
    assert "has no Freeze arm with k=3" in markdown(compare(3, res))
