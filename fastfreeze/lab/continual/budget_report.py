"""Markdown for the convergence budget: per-arm budgets, matched-accuracy retention, and the table over seeds.

Usage: `lines = budget_sections(results)` (report.md of one run); `seed_table(seed_summary(runs))` (3 seeds).
"""
from __future__ import annotations


def _pct(v) -> str:
    return "-" if v is None else f"{100 * v:.1f}"


def budget_sections(results: dict) -> list[str]:
    """The report's budget and matched-retention sections (nothing when the run had no `budget:`)."""
    arms = {n: a for n, a in results["arms"].items() if a.get("budget")}
    if not arms:
        return []
    T = results["num_tasks"]
    bud = results["config"]["budget"]
    lines = ["## Convergence budget", "",
             f"Each later task: the reference arm ({bud.get('reference', 'seq')}) trains the configured epochs; "
             "every other arm trains until its exact match on a validation split of that task's training people "
             "reaches the reference's minus the margin (target), stops gaining (plateau) or hits the cap. "
             "Cells: epochs (steps, why it stopped; validation exact match at the end).", "",
             "| arm | " + " | ".join(f"task {t}" for t in range(1, T)) + " |", "|---" * T + "|"]
    for name, arm in arms.items():
        cells = []
        for b in arm["budget"][1:]:
            cells.append("" if not b else f"{b['epochs']:.1f} ({b['steps']}, {b['reason']}; "
                         f"{_pct(b['final_validation'])})")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    matched = results.get("matched_retention") or {}
    if matched:
        lines += ["", "## Task-0 retention at matched later-task accuracy", "",
                  "For arm a and task t: level = min(a's best, the reference's best) validation exact match on "
                  "task t; Task-0 test accuracy of each at its first check at or above the level (step in "
                  "brackets). Ratio = arm / reference.", "",
                  "| task | arm | level | arm Task-0 | reference Task-0 | ratio |", "|---|---|---|---|---|---|"]
        for t, row in matched.items():
            for name, m in row.items():
                ratio = "-" if m["ratio"] is None else f"{m['ratio']:.2f}x"
                lines.append(f"| {t} | {name} | {_pct(m['level'])} | {_pct(m['task0'])} ({m['step']}) | "
                             f"{_pct(m['reference_task0'])} ({m['reference_step']}) | {ratio} |")
    return lines + [""]


def _ms(d: dict, pct: bool = True, fmt: str = "{:.1f}") -> str:
    if d["mean"] is None:
        return "-"
    k = 100 if pct else 1
    return f"{fmt.format(k * d['mean'])} [{fmt.format(k * d['min'])}, {fmt.format(k * d['max'])}]"


def seed_table(summary: dict) -> str:
    """Markdown: one row per arm, mean [min, max] over seeds (fastfreeze.lab.continual.metrics.seed_summary)."""
    lines = ["| arm | epochs per later task | later-task accuracy | final Task-0 | Task-0 at matched Task 1 "
             "| ratio vs SEQ (Task 1) | Task-0 at matched last task | ratio vs SEQ (last task) |",
             "|---|---|---|---|---|---|---|---|"]
    for name, s in summary.items():
        lines.append(f"| {name} | {_ms(s['epochs'], False)} | {_ms(s['later_acc'])} | {_ms(s['final_task0'])} | "
                     f"{_ms(s['matched1_task0'])} | {_ms(s['matched1_ratio'], False, '{:.2f}')} | "
                     f"{_ms(s['matchedL_task0'])} | {_ms(s['matchedL_ratio'], False, '{:.2f}')} |")
    return "\n".join(lines)
