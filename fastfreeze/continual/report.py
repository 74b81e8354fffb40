"""Writes a run's outputs: results.json, report.md (tables, metric definitions) and the PNG plots."""
from __future__ import annotations

from pathlib import Path

from .. import _io
from .diagnostics import markdown_table
from .metrics import DEFINITIONS_MD


def _pct(v) -> str:
    return "-" if v is None else f"{100 * v:.1f}"


def _signed(v) -> str:
    return "-" if v is None else f"{100 * v:+.1f}"


def render_report(results: dict, plots: dict[str, str]) -> str:
    """The markdown report of a results dict (see Runner._results)."""
    T = results["num_tasks"]
    files = (results["config"].get("data") or {}).get("files")
    tasks = (
        f"Task t: fine-tune on data.files task<t>_train, scored on task<t>_test ({T} task(s)). Accuracy = "
        "exact match of greedy decoding (answer then EOS), in percent."
        if files else
        f"Task 0: QA fine-tune on people A, test on held-out people B (knowledge extraction from the "
        f"biographies). Tasks 1..{T - 1}: QA on new people. Accuracy = exact match of greedy decoding "
        "(answer then EOS), mean over the six attributes, in percent."
    )
    lines = [
        "# Continual-learning report",
        "",
        f"Written {results['written']} on {results['machine']}.",
        tasks,
        "",
        "## Summary",
        "",
        "| arm | ACC | BWT | FWT | forgetting | final Task-0 | final last task |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, arm in results["arms"].items():
        m, R = arm["metrics"], arm["accuracy_matrix"]
        lines.append(
            f"| {name} | {_pct(m['average_accuracy'])} | {_signed(m['backward_transfer'])} | "
            f"{_signed(m['forward_transfer'])} | {_pct(m['forgetting'])} | {_pct(R[-1][0])} | {_pct(R[-1][-1])} |"
        )
    lines += ["", "Before Task 0 (pretrained model): " + ", ".join(
        f"task {j} {_pct(v)}" for j, v in enumerate(results["baseline"])), ""]
    from .safety_scenario import render_safety_section

    lines += render_safety_section(results)
    if "matrices" in plots:
        lines += [f"![accuracy matrices]({plots['matrices']})", ""]
    lines += ["## Accuracy matrices", "", "Row i: after training task i; column j: evaluated on task j "
              "(the entry right of the diagonal is the next task before it is trained).", ""]
    for name, arm in results["arms"].items():
        R, RF = arm["accuracy_matrix"], arm["first_token_matrix"]
        lines += [f"### {name}", "", "| after \\ on | " + " | ".join(f"task {j}" for j in range(T)) + " |",
                  "|---" * (T + 1) + "|"]
        for i in range(T):
            cells = [f"{_pct(R[i][j])} ({_pct(RF[i][j])})" if R[i][j] is not None else "" for j in range(T)]
            lines.append(f"| task {i} | " + " | ".join(cells) + " |")
        lines += ["", "Exact match (first-token accuracy in brackets).", ""]
    dense_arms = {n: a["dense"] for n, a in results["arms"].items() if a.get("dense")}
    if dense_arms:
        lines += ["## Task-0 accuracy during Task 1", ""]
        if "dense" in plots:
            lines += [f"![dense]({plots['dense']})", ""]
        lines += ["| arm | step 0 | lowest (step) | at step 25 | last dense step |", "|---|---|---|---|---|"]
        for name, d in dense_arms.items():
            h = d["history"]
            low = min(h, key=lambda r: r["exact_match"])
            at25 = next((r for r in h if r["step"] >= 25), h[-1])
            lines.append(f"| {name} | {_pct(h[0]['exact_match'])} | {_pct(low['exact_match'])} ({low['step']}) | "
                         f"{_pct(at25['exact_match'])} (step {at25['step']}) | {_pct(h[-1]['exact_match'])} "
                         f"(step {h[-1]['step']}) |")
        lines.append("")
    rec_arms = {n: a["recovery"] for n, a in results["arms"].items() if a.get("recovery")}
    if rec_arms:
        lines += ["## Recovery test", "",
                  "From each arm's last checkpoint: a short fine-tune on part of the old task's training "
                  "people; accuracy on its held-out people (never trained in QA form). What returns was "
                  "never lost: only the task alignment was.", "",
                  "| arm | task | trained on | steps | before | after | last task after |", "|---|---|---|---|---|---|---|"]
        for name, r in rec_arms.items():
            t = str(r["task"])
            last = r["after"][str(T - 1)]["exact_match"]
            lines.append(f"| {name} | {t} | {r['train_examples']} QA rows | {r['steps']} | "
                         f"{_pct(r['before']['exact_match'])} | {_pct(r['after'][t]['exact_match'])} | {_pct(last)} |")
        lines.append("")
    orth_arms = {n: a["orthogonality"] for n, a in results["arms"].items()
                 if a.get("orthogonality") and a["orthogonality"].get("rows")}
    if orth_arms:
        lines += ["## Update orthogonality", "",
                  "Mean cosine of the principal angles between the top singular subspaces (99% energy) of "
                  "the weight updates in two windows of Task 1; in brackets, the value for random "
                  "subspaces of the same ranks. Low = the second window moves the weights in new, "
                  "orthogonal directions.", ""]
        if "orthogonality" in plots:
            lines += [f"![orthogonality]({plots['orthogonality']})", ""]
        for name, o in orth_arms.items():
            lines += [f"### {name}: steps {o['windows'][0]} vs {o['windows'][1]}", "", markdown_table(o), ""]
    lines += ["## Metric definitions", "", DEFINITIONS_MD, "## Stage timings (s)", "",
              ", ".join(f"{k}: {v}" for k, v in results["timings_s"].items()), ""]
    return "\n".join(lines)


def write_outputs(results: dict, out: Path) -> dict[str, Path]:
    """results.json, report.md and plots into `out`. Returns the written paths by kind."""
    from .plots import plot_accuracy_matrices, plot_dense, plot_orthogonality

    out = Path(out)
    plots: dict[str, str] = {}
    plot_accuracy_matrices(results["arms"], out / "accuracy_matrix.png")
    plots["matrices"] = "accuracy_matrix.png"
    if plot_dense(results["arms"], out / "task0_during_task1.png"):
        plots["dense"] = "task0_during_task1.png"
    if plot_orthogonality(results["arms"], out / "orthogonality.png"):
        plots["orthogonality"] = "orthogonality.png"
    results["plots"] = plots
    _io.write_json(out / "results.json", results, indent=2, default=str)
    _io.write_text(out / "report.md", render_report(results, plots))
    paths = {"results": out / "results.json", "report": out / "report.md"}
    paths.update({k: out / v for k, v in plots.items()})
    return paths
