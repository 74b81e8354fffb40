"""The suggest-k evidence per frozen depth, and why it names no single k: its one rule fails at matched budgets.

RULE (defaults `learn_min=0.8`, `tie=0.02`, tuned on the tiny preset's seed 1 only, at equal budgets; docs/suggest-k.md):
  For each k = 0..L (embedding + bottom k blocks frozen) the probe gives
    retention_k = old-task first-token accuracy after the probe steps, and
    learning_k  = (new-task loss before - after the probe with k frozen)
                  / (new-task loss before - after the probe with nothing frozen),
  the share of the unfrozen (SEQ) probe's new-task progress that the frozen model still makes.
  1. A depth is eligible if learning_k >= learn_min (it still learns the new task at a useful rate).
  2. best = the highest retention_k among eligible depths.
  3. The rule's pick: the smallest eligible k with retention_k >= best - tie.
MEASURED (FAIR_HITS): where every arm trains until it matches SEQ's accuracy (the five_task_fair preset's
convergence budget) the pick was among the best arms on 0 of 3 seeds. No rule for that budget could be tuned
on runs other than those 3 seeds, so none is validated, and `suggest` names no k: it returns the per-depth
evidence, the rule's pick (``rule_k``, to measure it against a run with ``--compare``) and that hit rate.
The per-layer update sizes and orthogonality are reported beside it as evidence.
"""
from __future__ import annotations

LEARN_MIN = 0.8
TIE = 0.02

# The rule's measured hit rate at the fair preset's convergence budget (suggest_k_2026-12-03 probes vs the
# continual_fair_2026-12-03 arms; tests/lab/suggest/test_rule.py recomputes it from those files).
# A hit: an arm with the picked k is among the best by Task-0 retention at matched later-task accuracy.
FAIR_HITS = {"preset": "five_task_fair", "measured": "2026-12-03", "seeds": [0, 1, 2], "hits": 0,
             "picked": [1, 1, 1], "best": [2, 2, 2],
             "files": "benchmarks/results/suggest_k_2026-12-03/, benchmarks/results/continual_fair_2026-12-03/"}

WHY_NO_K = (
    "the only rule tried (below) picked k={picked} on the fair five-task preset's seeds {seeds}, where "
    "every arm trains until it matches SEQ's accuracy, and k={best} was the best arm on each (measured hit rate "
    "{hits}/{n}, {measured}). At that budget a depth that learns more slowly still matches SEQ by training longer, "
    "so the probe's learning share does not rank the depths, and the old task's first token saturates from k=1 on, "
    "so it does not either. A rule for matched budgets would have to be tuned on such runs and validated on others; "
    "the only ones are those {n} seeds (docs/suggest-k.md). The table above is the evidence"
)

RULE_TEXT = (
    "eligible: k whose probe keeps >= {learn_min:.0%} of the unfrozen probe's new-task loss reduction; "
    "the rule's pick: the smallest eligible k whose old-task first-token accuracy after the probe is within "
    "{tie_pts:g} points of the best eligible k's (tuned at equal budgets)"
)


def learning_shares(probe: dict) -> dict:
    """{k: learning_k} for every arm of `probe` (k None = SEQ, share 1.0). Raises ValueError when the
    unfrozen probe did not lower the new-task loss (the share is then meaningless)."""
    before = probe["new_loss_before"]
    seq = next(a for a in probe["arms"] if a["k"] is None)
    drop = before - seq["new_loss"]
    if not drop > 0:
        raise ValueError(
            f"the unfrozen probe did not lower the new-task loss ({before:.4f} -> {seq['new_loss']:.4f}); "
            "raise --steps or --learning-rate so the probe learns something"
        )
    return {a["k"]: (before - a["new_loss"]) / drop for a in probe["arms"]}


def _rule_pick(rows: list, learn_min: float, tie: float) -> tuple[int, str]:
    """The equal-budget rule's pick over rows marked eligible, and its reason."""
    cands = [r for r in rows if r["eligible"]]
    if not cands:
        return 0, f"no depth keeps {learn_min:.0%} of the new-task progress (the rule then picks k=0)"
    best = max(r["old_first_token"] for r in cands)
    return min(r["k"] for r in cands if r["old_first_token"] >= best - tie), f"best eligible old first-token {best:.1%}"


def suggest(probe: dict, learn_min: float = LEARN_MIN, tie: float = TIE) -> dict:
    """The per-depth evidence of a `run_probe` result and no single k (module docstring). Returns {"k": None,
    "rule_k" (the equal-budget rule's pick), "rule_reason", "hit_rate" (FAIR_HITS), "reason", "rule", "rows"};
    each row adds `learning` and `eligible` to a probed depth. Usage: `suggest(run_probe(...))["rows"]`."""
    shares = learning_shares(probe)
    rows = []
    for a in probe["arms"]:
        eligible = a["k"] is not None and shares[a["k"]] >= learn_min
        rows.append({**a, "learning": shares[a["k"]], "eligible": eligible})
    rule_k, rule_reason = _rule_pick(rows, learn_min, tie)
    h = FAIR_HITS
    reason = WHY_NO_K.format(picked=h["picked"][0], best=h["best"][0], seeds=", ".join(map(str, h["seeds"])),
                             hits=h["hits"], n=len(h["seeds"]), measured=h["measured"])
    return {"k": None, "rule_k": rule_k, "rule_reason": rule_reason, "hit_rate": dict(h),
            "rule": RULE_TEXT.format(learn_min=learn_min, tie_pts=round(tie * 100, 6)), "rows": rows,
            "learn_min": learn_min, "tie": tie, "reason": reason}


def _pct(x) -> str:
    return "-" if x is None else f"{100 * x:.1f}%"


def _num(x, fmt: str = "{:.3g}") -> str:
    return "-" if x is None else fmt.format(x)


def markdown(result: dict) -> str:
    """The evidence tables and the suggestion as markdown (what `fastfreeze suggest-k` prints)."""
    probe, sug = result["probe"], result["suggestion"]
    s = probe["settings"]
    lines = [
        f"Probe: {s['steps']} steps on the new task, lr {s['learning_rate']:g}, batch {s['batch_size']}; "
        f"old task before the probe: first-token {_pct(probe['old_before']['first_token'])}, exact match "
        f"{_pct(probe['old_before']['exact_match'])}; new-task loss before {probe['new_loss_before']:.3f}; "
        f"subspace energy {s['energy']:g}.",
        "",
        "Per layer (unfrozen probe): relative update size ||dW||/||W|| of the old task (checkpoint before it -> "
        "model) and of the probe; the cosine of the two flattened updates (< 0: the probe undoes the old task's "
        "update); the mean principal cosine between their subspaces at the energy below (random = same-rank "
        "random subspaces).",
        "",
        "| layer | old-task update | probe update | flat cos | mean cos | random cos | cos / random |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in probe["per_layer"]:
        lines.append(f"| {r['layer']} | {_num(r['old_update'])} | {_num(r['new_update'])} | {_num(r['flat_cos'], '{:+.3f}')} "
                     f"| {_num(r['mean_cos'])} "
                     f"| {_num(r['random_cos'])} | {_num(r['cos_over_random'], '{:.2f}')} |")
    lines += [
        "",
        "Per frozen depth: old task after the probe, and how much of the unfrozen probe's new-task progress it keeps.",
        "",
        "| frozen | old first-token | old exact match | new-task loss | learning kept | eligible (rule) |",
        "|---|---|---|---|---|---|",
    ]
    for r in sug["rows"]:
        name = "none (SEQ)" if r["k"] is None else f"k={r['k']}"
        lines.append(f"| {name} | {_pct(r['old_first_token'])} | {_pct(r['old_exact_match'])} | {r['new_loss']:.3f} "
                     f"| {100 * r['learning']:.0f}% | {'-' if r['k'] is None else ('yes' if r['eligible'] else 'no')} |")
    h = sug["hit_rate"]
    lines += ["", f"Hit rate at matched budgets (measured {h['measured']}, {h['preset']} seeds "
                  f"{', '.join(map(str, h['seeds']))}): {h['hits']}/{len(h['seeds'])}.",
              f"Suggested k: none; {sug['reason']}.", f"Rule: {sug['rule']}; here it would pick k={sug['rule_k']} "
              f"({sug['rule_reason']}), which is not a suggestion."]
    return "\n".join(lines)
