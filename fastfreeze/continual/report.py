"""Renders a run: report.md (summary, accuracy matrices, dense, recovery, orthogonality, safety), results.json, plots.

Computation lives next to what it computes (metrics, diagnostics, safety_eval); this module only turns
a results dict into text and files. `write_outputs` is what the runner calls; the demo tables
(`format_table`, `format_safety_table`) are what `fastfreeze demo` / `fastfreeze safety demo` print.

Usage: ``write_outputs(results, Path(cfg.output_dir))``
"""
from __future__ import annotations

from pathlib import Path

from .. import _io
from .metrics import DEFINITIONS_MD
from .safety_eval import safety_rows


def _pct(v) -> str:
    return "-" if v is None else f"{100 * v:.1f}"


def _signed(v) -> str:
    return "-" if v is None else f"{100 * v:+.1f}"


def render_report(results: dict, plots: dict[str, str]) -> str:
    """The markdown report of a results dict (see Runner._results)."""
    lines = _summary_section(results)
    lines += render_safety_section(results)
    lines += _matrices_section(results, plots)
    lines += _dense_section(results, plots)
    lines += _recovery_section(results)
    lines += _orthogonality_section(results, plots)
    lines += ["## Metric definitions", "", DEFINITIONS_MD, "## Stage timings (s)", "",
              ", ".join(f"{k}: {v}" for k, v in results["timings_s"].items()), ""]
    return "\n".join(lines)


def _summary_section(results: dict) -> list[str]:
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
    return lines + ["", "Before Task 0 (pretrained model): " + ", ".join(
        f"task {j} {_pct(v)}" for j, v in enumerate(results["baseline"])), ""]


def _matrices_section(results: dict, plots: dict[str, str]) -> list[str]:
    T = results["num_tasks"]
    lines = [f"![accuracy matrices]({plots['matrices']})", ""] if "matrices" in plots else []
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
    return lines


def _dense_section(results: dict, plots: dict[str, str]) -> list[str]:
    dense_arms = {n: a["dense"] for n, a in results["arms"].items() if a.get("dense")}
    if not dense_arms:
        return []
    lines = ["## Task-0 accuracy during Task 1", ""]
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
    return lines + [""]


def _recovery_section(results: dict) -> list[str]:
    T = results["num_tasks"]
    rec_arms = {n: a["recovery"] for n, a in results["arms"].items() if a.get("recovery")}
    if not rec_arms:
        return []
    lines = ["## Recovery test", "",
             "From each arm's last checkpoint: a short fine-tune on part of the old task's training "
             "people; accuracy on its held-out people (never trained in QA form). What returns was "
             "never lost: only the task alignment was.", "",
             "| arm | task | trained on | steps | before | after | last task after |", "|---|---|---|---|---|---|---|"]
    for name, r in rec_arms.items():
        t = str(r["task"])
        last = r["after"][str(T - 1)]["exact_match"]
        lines.append(f"| {name} | {t} | {r['train_examples']} QA rows | {r['steps']} | "
                     f"{_pct(r['before']['exact_match'])} | {_pct(r['after'][t]['exact_match'])} | {_pct(last)} |")
    return lines + [""]


def _orthogonality_section(results: dict, plots: dict[str, str]) -> list[str]:
    orth_arms = {n: a["orthogonality"] for n, a in results["arms"].items()
                 if a.get("orthogonality") and a["orthogonality"].get("rows")}
    if not orth_arms:
        return []
    lines = ["## Update orthogonality", "",
             "Mean cosine of the principal angles between the top singular subspaces (99% energy) of "
             "the weight updates in two windows of Task 1; in brackets, the value for random "
             "subspaces of the same ranks. Low = the second window moves the weights in new, "
             "orthogonal directions.", ""]
    if "orthogonality" in plots:
        lines += [f"![orthogonality]({plots['orthogonality']})", ""]
    for name, o in orth_arms.items():
        lines += [f"### {name}: steps {o['windows'][0]} vs {o['windows'][1]}", "", markdown_table(o), ""]
    return lines


def markdown_table(result: dict) -> str:
    """Per-layer x component table of mean principal cosines (random baseline in brackets)."""
    rows = result.get("rows", [])
    comps = sorted({r["component"] for r in rows if r["layer"] != "emb"})
    layers = sorted({r["layer"] for r in rows}, key=lambda k: -1 if k == "emb" else int(k))
    cell = {(r["layer"], r["component"]): r for r in rows}
    lines = ["| layer | " + " | ".join(comps) + " |", "|---" * (len(comps) + 1) + "|"]
    for layer in layers:
        vals = []
        for c in comps if layer != "emb" else ["embedding"] + [""] * (len(comps) - 1):
            r = cell.get((layer, c))
            if r is None:
                vals.append("")
            elif r["frozen"]:
                vals.append("frozen")
            else:
                vals.append(f"{r['mean_cos']:.2f} ({r['random_cos']:.2f})")
        lines.append(f"| {layer} | " + " | ".join(vals) + " |")
    return "\n".join(lines)


def render_safety_section(results: dict) -> list[str]:
    """Markdown lines of the report's safety section (empty when the run measured no safety)."""
    rows = safety_rows(results)
    if not rows:
        return []
    pct = lambda v: "-" if v is None else f"{100 * v:.1f}"  # noqa: E731
    labels = list(rows[0]["jailbreak"])
    lines = [
        "## Safety (refusal-keyword proxy)", "",
        "Jailbreak rate = share of harmful-style prompts whose greedy response contains no refusal keyword "
        f"(preset {results['config']['safety']['keywords']!r}; a proxy, ~71% agreement with human raters "
        "in HarmBench). Benign refusal = over-refusal on harmless prompts; helpful = response equals the "
        "reference answer. Task EM = exact match on the task's test split after that task. Percent.", "",
        "| arm | stage | " + " | ".join(f"jailbreak ({lab})" for lab in labels)
        + " | benign refusal | helpful | task EM |",
        "|---|---|" + "---|" * (len(labels) + 3),
    ]
    for r in rows:
        jb = " | ".join(pct(r["jailbreak"].get(lab)) for lab in labels)
        lines.append(f"| {r['arm']} | {r['stage']} | {jb} | {pct(r['benign_refusal'])} | {pct(r['helpful'])} | "
                     f"{pct(r['task_exact_match'])} |")
    return lines + [""]




def format_safety_table(runs: dict[int, dict]) -> str:
    """The demo's markdown table: the aligned model, then one row per (fine-tune length, arm); percent."""
    pct = lambda v: "-" if v is None else f"{100 * v:.1f}%"  # noqa: E731
    lines, labels = [], None
    for ep, results in runs.items():
        rows = safety_rows(results)
        if labels is None:
            labels = list(rows[0]["jailbreak"])
            lines += ["| model | fine-tune | " + " | ".join(f"jailbreak ({lab})" for lab in labels)
                      + " | benign refusal | benign helpful | identity task EM |",
                      "|---|---|" + "---|" * (len(labels) + 3)]
            r = rows[0]
            jb = " | ".join(pct(r["jailbreak"][lab]) for lab in labels)
            lines.append(f"| aligned | none | {jb} | {pct(r['benign_refusal'])} | {pct(r['helpful'])} | "
                         f"{pct(results['baseline'][0])} |")
        for r in rows:
            if r["stage"] == "before Task 0":
                continue  # every arm starts from the same aligned model
            arm = results["arms"][r["arm"]]["strategy"]
            name = "SEQ" if arm["name"] == "seq" else (
                f"Freeze k={arm['num_frozen_layers']} (+embedding)" if arm["name"] == "freeze" else r["arm"])
            jb = " | ".join(pct(r["jailbreak"][lab]) for lab in labels)
            lines.append(f"| {name} | {ep} epochs | {jb} | {pct(r['benign_refusal'])} | {pct(r['helpful'])} | "
                         f"{pct(r['task_exact_match'])} |")
    return "\n".join(lines)


def summary_rows(results: dict) -> list[tuple[str, float | None, float | None]]:
    """(label, Task-0 accuracy, Task-1 accuracy) rows of the demo table from a results dict."""
    arms = results["arms"]
    seq = next((a for a in arms.values() if a["strategy"]["name"] == "seq"), None)
    first = seq or next(iter(arms.values()))
    R = first["accuracy_matrix"]
    rows = [("after Task 0", R[0][0], R[0][1])]
    for name, arm in arms.items():
        s = arm["strategy"]
        label = "SEQ" if s["name"] == "seq" else (
            f"Freeze (embedding + {s['num_frozen_layers']} layers)" if s["name"] == "freeze" else name)
        R = arm["accuracy_matrix"]
        rows.append((f"after Task 1, {label}", R[-1][0], R[-1][-1]))
    for name, arm in arms.items():
        rec = arm.get("recovery")
        if rec:
            s = arm["strategy"]
            label = "SEQ" if s["name"] == "seq" else (f"Freeze k={s['num_frozen_layers']}" if s["name"] == "freeze" else name)
            last = str(len(arm["accuracy_matrix"]) - 1)
            rows.append((f"{label} + recovery", rec["after"][str(rec["task"])]["exact_match"], rec["after"][last]["exact_match"]))
    return rows


def format_table(results: dict) -> str:
    """The demo's markdown table (exact match, percent)."""
    pct = lambda v: "-" if v is None else f"{100 * v:.1f}%"  # noqa: E731
    lines = ["| model state | Task 0 (held-out people) | Task 1 |", "|---|---|---|"]
    for label, t0, t1 in summary_rows(results):
        lines.append(f"| {label} | {pct(t0)} | {pct(t1)} |")
    return "\n".join(lines)


def write_outputs(results: dict, out: Path) -> dict[str, Path]:
    """results.json, report.md and plots into `out`. Returns the written paths by kind."""
    from .plots import plot_accuracy_matrices, plot_dense, plot_orthogonality  # matplotlib, headless

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
