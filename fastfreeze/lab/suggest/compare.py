"""Does the suggest-k rule's pick land among the best arms of a finished continual run? (`fastfreeze suggest-k --compare`)

Reads a runner's results.json (any run: the demo, five_task, or a matched-budget run) and scores its SEQ
and index-exact Freeze arms two ways; "best" = within `margin` (default 2 points) of the top score:
  - ACC: average exact match over all tasks after the last one (balances keeping and learning);
  - retention at matched accuracy: Task-0 exact match after the last task, among the arms whose later-task
    accuracy (mean over tasks t >= 1 of the accuracy on t right after learning it) is within `tolerance`
    (default 5 points) of SEQ's. On a run whose arms trained to a matched accuracy every arm qualifies,
    and this is the retention-at-matched-accuracy comparison; on an equal-budget run it excludes the arms
    that learned the later tasks much less.
"""
from __future__ import annotations

from fastfreeze.lab.continual.metrics import average_accuracy


def arm_k(strategy: dict) -> tuple[bool, int | None]:
    """(is comparable, k): SEQ -> (True, None); an index-exact Freeze arm with the embedding frozen -> (True, k);
    anything else (Replay, EWC, freeze sets given by name patterns) -> (False, None)."""
    name = strategy.get("name")
    if name == "seq":
        return True, None
    if name == "freeze" and strategy.get("freeze_embeddings", True) and not strategy.get("patterns"):
        return True, int(strategy.get("num_frozen_layers", 0))
    return False, None


def arm_scores(results: dict) -> list[dict]:
    """One row per comparable arm: name, k, Task-0 after Task 1 and after the last task, later-task accuracy, ACC."""
    rows = []
    for name, arm in results["arms"].items():
        ok, k = arm_k(arm.get("strategy") or {})
        R = arm.get("accuracy_matrix")
        if not ok or not R or len(R) < 2:
            continue
        T = len(R)
        rows.append({
            "arm": name, "k": k,
            "task0_after_task1": R[1][0], "task0_final": R[T - 1][0],
            "later": sum(R[t][t] for t in range(1, T)) / (T - 1),
            "acc": average_accuracy(R),
        })
    if not any(r["k"] is None for r in rows):
        raise ValueError("the results have no SEQ arm (strategy name 'seq'); the comparison is against SEQ")
    return rows


def compare(suggested_k: int, results: dict, margin: float = 0.02, tolerance: float = 0.05) -> dict:
    """Which arms are best by each criterion, and whether an arm with the suggested k is among them.

    Usage: `compare(2, json.load(open("results.json")))["verdict"]`.
    """
    rows = arm_scores(results)
    seq_later = next(r["later"] for r in rows if r["k"] is None)
    top_acc = max(r["acc"] for r in rows)
    for r in rows:
        r["matched"] = r["later"] >= seq_later - tolerance - 1e-12  # SEQ always qualifies
    top_ret = max(r["task0_final"] for r in rows if r["matched"])
    for r in rows:
        r["best_acc"] = r["acc"] >= top_acc - margin - 1e-12
        r["best_retention"] = r["matched"] and r["task0_final"] >= top_ret - margin - 1e-12
    mine = [r for r in rows if r["k"] == suggested_k]
    verdict = {
        "suggested_k": suggested_k,
        "arm_with_k": bool(mine),
        "among_best_acc": any(r["best_acc"] for r in mine),
        "among_best_retention": any(r["best_retention"] for r in mine),
        "best_acc_arms": [r["arm"] for r in rows if r["best_acc"]],
        "best_retention_arms": [r["arm"] for r in rows if r["best_retention"]],
    }
    return {"margin": margin, "tolerance": tolerance, "rows": rows, "verdict": verdict}


def markdown(cmp: dict) -> str:
    """The comparison table and its one-line verdict."""
    v = cmp["verdict"]
    lines = [
        "| arm | k | Task 0 after Task 1 | Task 0 at the end | later tasks | ACC | best ACC | later within "
        f"{100 * cmp['tolerance']:g} pts of SEQ | best retention |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    yn = {True: "yes", False: "no"}
    for r in cmp["rows"]:
        lines.append(
            f"| {r['arm']} | {'-' if r['k'] is None else r['k']} | {100 * r['task0_after_task1']:.1f}% | "
            f"{100 * r['task0_final']:.1f}% | {100 * r['later']:.1f}% | {100 * r['acc']:.1f} | {yn[r['best_acc']]} | "
            f"{yn[r['matched']]} | {yn[r['best_retention']]} |"
        )
    k = v["suggested_k"]
    if not v["arm_with_k"]:
        lines.append(f"\nThe run has no Freeze arm with k={k}: the rule's pick cannot be checked against it.")
    else:
        lines.append(
            f"\nThe rule's pick k={k}: {'among' if v['among_best_acc'] else 'NOT among'} the best arms by ACC "
            f"({', '.join(v['best_acc_arms'])}); {'among' if v['among_best_retention'] else 'NOT among'} the best "
            f"by Task-0 retention at matched later-task accuracy ({', '.join(v['best_retention_arms'])}); "
            f"best = within {100 * cmp['margin']:g} points of the top."
        )
    return "\n".join(lines)
