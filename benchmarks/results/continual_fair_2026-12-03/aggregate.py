"""Aggregate five_task_fair seeds: python aggregate.py OUT.md RUN_DIR... (summary.md is its output)"""
import json, sys
from fastfreeze.lab.continual.metrics import seed_summary
from fastfreeze.lab.continual.budget_report import seed_table
out, dirs = sys.argv[1], sys.argv[2:]
runs = [json.load(open(f"{d}/results.json")) for d in dirs]
seeds = [r["config"]["seed"] for r in runs]
lines = [f"# five_task_fair over seeds {seeds}", "",
         "Mean [min, max] over seeds. Epochs: mean over the 5 later tasks of the epochs each arm trained (SEQ: 8, "
         "the budget's reference). Later-task accuracy: mean of R[t][t], t = 1..5 (test = training people). "
         "Matched: Task-0 test accuracy when the arm's Task-t validation accuracy first reaches "
         "min(arm's best, SEQ's best), and its ratio to SEQ's at the same level (docs/continual.md).", "",
         seed_table(seed_summary(runs)), "", "## Per seed", ""]
for r in runs:
    lines += [f"### seed {r['config']['seed']}", "",
              "| arm | Task-0 after T1 | after T5 | budget per task: epochs, reason (t target, p plateau, c cap, r reference) | matched ratio vs SEQ, T1..T5 |", "|---|---|---|---|---|"]
    for name, a in r["arms"].items():
        R = a["accuracy_matrix"]
        bud = ", ".join(f"{b['epochs']:.1f} {b['reason'][0]}" for b in a["budget"][1:])
        mr = r["matched_retention"]
        ratios = " / ".join("-" if name not in mr[t] or mr[t][name]["ratio"] is None else f"{mr[t][name]['ratio']:.2f}"
                            for t in sorted(mr, key=int))
        lines.append(f"| {name} | {100*R[1][0]:.1f} | {100*R[-1][0]:.1f} | {bud} | {ratios if name != 'seq' else '-'} |")
    lines.append("")
open(out, "w").write("\n".join(lines))
print("\n".join(lines))
