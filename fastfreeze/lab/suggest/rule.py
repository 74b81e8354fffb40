"""The suggest-k rule: the smallest frozen depth that protects the old task about as well as any depth that still learns.

RULE (defaults `learn_min=0.8`, `tie=0.02`, tuned on the tiny preset's seed 1 only; docs/suggest-k.md):
  For each k = 0..L (embedding + bottom k blocks frozen) the probe gives
    retention_k = old-task first-token accuracy after the probe steps, and
    learning_k  = (new-task loss before - after the probe with k frozen)
                  / (new-task loss before - after the probe with nothing frozen),
  the share of the unfrozen (SEQ) probe's new-task progress that the frozen model still makes.
  1. A depth is eligible if learning_k >= learn_min (it still learns the new task at a useful rate).
  2. best = the highest retention_k among eligible depths.
  3. Suggest the smallest eligible k with retention_k >= best - tie (a deeper freeze that protects no
     better only costs capacity).
  If no depth is eligible, suggest k=0 and say so (freezing anything slows the new task that much).
The per-layer update sizes and orthogonality are reported beside it as evidence; they do not enter the rule.
learn_min encodes an equal-budget regime (a slower learner learns less): validated there on the tiny preset,
it picked k=1 on the five-task preset where, with a per-arm convergence budget, k=2 was best (docs/suggest-k.md).
"""
from __future__ import annotations

LEARN_MIN = 0.8
TIE = 0.02

RULE_TEXT = (
    "eligible: k whose probe keeps >= {learn_min:.0%} of the unfrozen probe's new-task loss reduction; "
    "suggest the smallest eligible k whose old-task first-token accuracy after the probe is within "
    "{tie_pts:g} points of the best eligible k's"
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


def suggest(probe: dict, learn_min: float = LEARN_MIN, tie: float = TIE) -> dict:
    """Apply the rule (module docstring) to a `run_probe` result. Returns {"k", "reason", "rule", "rows"}; each row
    adds `learning` and `eligible` to a probed depth. Usage: `suggest(run_probe(...))["k"]`."""
    shares = learning_shares(probe)
    rows = []
    for a in probe["arms"]:
        eligible = a["k"] is not None and shares[a["k"]] >= learn_min
        rows.append({**a, "learning": shares[a["k"]], "eligible": eligible})
    cands = [r for r in rows if r["eligible"]]
    rule = RULE_TEXT.format(learn_min=learn_min, tie_pts=round(tie * 100, 6))
    if not cands:
        return {"k": 0, "rule": rule, "rows": rows, "learn_min": learn_min, "tie": tie,
                "reason": f"no depth keeps {learn_min:.0%} of the new-task progress; k=0 (embedding only) is the "
                          "least intrusive freeze, and plain SEQ may be the better choice"}
    best = max(r["old_first_token"] for r in cands)
    chosen = min((r for r in cands if r["old_first_token"] >= best - tie), key=lambda r: r["k"])
    seq = next(r for r in rows if r["k"] is None)
    reason = (
        f"k={chosen['k']}: old-task first-token {chosen['old_first_token']:.1%} after the probe "
        f"(best eligible {best:.1%}; unfrozen {seq['old_first_token']:.1%}; before the probe "
        f"{probe['old_before']['first_token']:.1%}), keeping {chosen['learning']:.0%} of the unfrozen "
        "probe's new-task progress"
    )
    deeper = [r for r in rows if r["k"] is not None and r["k"] > chosen["k"] and not r["eligible"]]
    if deeper:
        reason += f"; deeper depths ({', '.join(str(r['k']) for r in deeper)}) learn too little (< {learn_min:.0%})"
    return {"k": chosen["k"], "rule": rule, "rows": rows, "learn_min": learn_min, "tie": tie, "reason": reason}


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
        "| frozen | old first-token | old exact match | new-task loss | learning kept | eligible |",
        "|---|---|---|---|---|---|",
    ]
    for r in sug["rows"]:
        name = "none (SEQ)" if r["k"] is None else f"k={r['k']}"
        mark = " **<- suggested**" if r["k"] == sug["k"] else ""
        lines.append(f"| {name} | {_pct(r['old_first_token'])} | {_pct(r['old_exact_match'])} | {r['new_loss']:.3f} "
                     f"| {100 * r['learning']:.0f}% | {'-' if r['k'] is None else ('yes' if r['eligible'] else 'no')}"
                     f"{mark} |")
    lines += ["", f"Suggested k = {sug['k']}: {sug['reason']}.", f"Rule: {sug['rule']}."]
    return "\n".join(lines)
