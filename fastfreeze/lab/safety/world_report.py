"""The safety-world table: per arm and evaluation point, mean and spread over seeds of every rate.

Usage:
    summary = summarize_world({0: res0, 1: res1, 2: res2})   # results of run_world_seed
    print(format_world_table(summary))
"""
from __future__ import annotations

import statistics

from fastfreeze.lab.safety.world_eval import SYSTEMS

METRICS = ("jailbreak", "leak", "persona", "helpful")
POINTS = ("paper_budget", "matched", "end")
_ARM_NAMES = {"seq": "SEQ"}


def arm_label(arm: str) -> str:
    """Human name of an arm: SEQ, Freeze k=N (index-exact), as-ran <set> (substring)."""
    if arm in _ARM_NAMES:
        return _ARM_NAMES[arm]
    if arm.startswith("paper:"):
        return f"as-ran {arm[6:]}"
    return f"Freeze k={arm[1:]}"


def _stat(values: list) -> dict | None:
    vals = [v for v in values if v is not None]
    if not vals:
        return None
    return {"mean": statistics.fmean(vals), "min": min(vals), "max": max(vals), "n": len(vals),
            "values": list(values)}


def summarize_world(results: dict) -> dict:
    """{arm: {point: {"step": stat, system: {metric: stat}}}} plus the aligned model's rates, over seeds.

    A point an arm never reached (identity EM below the match level) counts as missing: its stat has
    n < the number of seeds and `values` holds None for that seed.
    """
    seeds = sorted(results)
    first = results[seeds[0]]
    out = {"seeds": seeds, "match_em": first["match_em"], "aligned": {}, "arms": {}}
    for system in SYSTEMS:
        out["aligned"][system] = {m: _stat([results[s]["aligned"][system][m] for s in seeds]) for m in METRICS}
    for arm in first["arms"]:
        per_arm = {"frozen_blocks": first["arms"][arm]["frozen_blocks"],
                   "final_identity_em": _stat([results[s]["arms"][arm]["identity_em"][-1] for s in seeds])}
        for point in POINTS:
            evs = [results[s]["arms"][arm]["evals"].get(point) for s in seeds]
            ems = [results[s]["arms"][arm]["identity_em"] for s in seeds]
            entry = {"step": _stat([e["step"] if e else None for e in evs]),
                     "identity_em": _stat([em[e["step"] - 1] if e else None for e, em in zip(evs, ems)])}
            for system in SYSTEMS:
                entry[system] = {m: _stat([e[system][m] if e else None for e in evs]) for m in METRICS}
            per_arm[point] = entry
        out["arms"][arm] = per_arm
    return out


def _cell(stat: dict | None, pct: bool = True) -> str:
    if stat is None:
        return "n/a"
    scale, digits = (100, 0) if pct else (1, 1)  # a mean of steps keeps one decimal (17.7, not 18)
    text = f"{scale * stat['mean']:.{digits}f} [{scale * stat['min']:.0f}-{scale * stat['max']:.0f}]"
    n_all = len(stat["values"])
    return text if stat["n"] == n_all else f"{text} ({stat['n']}/{n_all} seeds)"


def format_world_table(summary: dict) -> str:
    """Markdown: one row per (arm, point); jailbreak / leak / persona / helpful, without | with the AOA system prompt."""
    head = ("| arm | frozen blocks | point | step | identity EM | jailbreak | leak | persona | helpful "
            "| jailbreak (sys) | leak (sys) | persona (sys) | helpful (sys) |")
    lines = [head, "|" + "---|" * 13]
    al = summary["aligned"]
    cells = [_cell(al[s][m]) for s in SYSTEMS for m in METRICS]
    lines.append("| aligned | - | before | 0 | - | " + " | ".join(cells) + " |")
    for arm, per in summary["arms"].items():
        blocks = ",".join(str(b) for b in per["frozen_blocks"]) or "none"
        for point in POINTS:
            e = per[point]
            cells = [_cell(e[s][m]) for s in SYSTEMS for m in METRICS]
            lines.append(f"| {arm_label(arm)} | {blocks} | {point} | {_cell(e['step'], pct=False)} | "
                         f"{_cell(e['identity_em'])} | "
                         + " | ".join(cells) + " |")
    return "\n".join(lines)


__all__ = ["arm_label", "format_world_table", "summarize_world"]
