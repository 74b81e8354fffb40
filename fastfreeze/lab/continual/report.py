"""Renders a run: report.md (summary, accuracy matrices, dense, recovery, orthogonality, safety), results.json, plots.

Computation lives next to what it computes (metrics, diagnostics, safety_eval); this module only turns
a results dict into text and files. `write_outputs` is what the runner calls; the demo tables
(`format_table`, `format_safety_table`) are what `fastfreeze demo` / `fastfreeze safety demo` print.

Usage: ``write_outputs(results, Path(cfg.output_dir))``
"""
from __future__ import annotations

from pathlib import Path

from fastfreeze import _io
from fastfreeze.lab.continual.budget_report import budget_sections
from fastfreeze.lab.continual.metrics import DEFINITIONS_MD
from fastfreeze.lab.continual.safety_eval import safety_rows


def _pct(v) -> str:
    return "-" if v is None else f"{100 * v:.1f}"


def _share(v, of) -> str:
    """`v` as a share of `of` ('-' when there is nothing to compare with)."""
    return "-" if not of else f"{100 * v / of:.0f}%"


def _signed(v) -> str:
    return "-" if v is None else f"{100 * v:+.1f}"


def render_report(results: dict, plots: dict[str, str]) -> str:
    """The markdown report of a results dict (see Runner._results)."""
    lines = _summary_section(results)
    lines += render_safety_section(results)
    lines += _matrices_section(results, plots)
    lines += _dense_section(results, plots)
    lines += _recovery_section(results)
    lines += recovery_curve_section(results, plots)
    lines += _few_section(results)
    lines += _early_stop_section(results)
    lines += budget_sections(results)
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


def recovery_curve_section(results: dict, plots: dict[str, str]) -> list[str]:
    """The recovery curve: Task-0 accuracy at checkpoints of Task 1, unrecovered and after a short recovery."""
    curves = {n: a["recovery_curve"] for n, a in results["arms"].items() if a.get("recovery_curve")}
    if not curves:
        return []
    c0 = next(iter(curves.values()))
    rc = results["config"]["recovery"]
    lines = ["## Recovery curve", "",
             f"From checkpoints of Task {c0['curve_task']} at the paper's steps {c0['requested_steps']} x "
             f"{c0['step_scale']:g} (this run's Task {c0['curve_task']} has {c0['total_steps']} optimizer steps "
             f"under SEQ): each is fine-tuned on {rc['fraction']:g} of Task {c0['task']}'s training people "
             f"({rc['training'] or 'the QA training settings'}) and scored on its held-out test people. "
             "Recovered close to the pre-Task-1 accuracy = the forgetting was spurious (alignment only); "
             "a gap = real loss. Percent exact match.", ""]
    if "recovery_curve" in plots:
        lines += [f"![recovery curve]({plots['recovery_curve']})", ""]
    lines += ["| arm | step | Task 0 unrecovered | Task 0 recovered | share of pre-Task-1 | "
              f"Task {c0['curve_task']} after recovery |", "|---|---|---|---|---|---|"]
    for name, c in curves.items():
        pre = c["points"][0]["before"]
        for p in c["points"]:
            lines.append(f"| {name} | {p['step']} | {_pct(p['before'])} | {_pct(p['after'])} | {_share(p['after'], pre)} | "
                         f"{_pct(p['curve_task_after'])} |")
    return lines + [""]


def _few_section(results: dict) -> list[str]:
    few = {n: a["recovery_few"] for n, a in results["arms"].items() if a.get("recovery_few")}
    if not few:
        return []
    rc = results["config"]["recovery"]
    lines = ["## Few-example recovery", "",
             f"From the checkpoint at step {next(iter(few.values()))['step']} of Task "
             f"{next(iter(few.values()))['curve_task']}: N QA examples of N different training people, "
             f"{rc['few_max_steps']} optimizer steps; last row: {rc['fraction']:g} of the training people "
             "(the recovery curve's setting). Task-0 test people, percent exact match.", "",
             "| arm | examples | people | before | after | share of pre-Task-1 |", "|---|---|---|---|---|---|"]
    for name, f in few.items():
        curve = results["arms"][name].get("recovery_curve")
        pre = curve["points"][0]["before"] if curve else None
        for r in f["rows"]:
            lines.append(f"| {name} | {r['examples']} | {r['people']} | {_pct(r['before'])} | {_pct(r['after'])} | "
                         f"{_share(r['after'], pre)} |")
    return lines + [""]


def _early_stop_section(results: dict) -> list[str]:
    stops = {n: a["early_stop"] for n, a in results["arms"].items() if any(a.get("early_stop") or [])}
    if not stops:
        return []
    lines = ["## Early stopping", "",
             "Stopping step per task, chosen on a validation split of that task's training people "
             "(its test split is never read); '-' = ran to the end.", "",
             "| arm | " + " | ".join(f"task {t}" for t in range(results["num_tasks"])) + " |",
             "|---" * (results["num_tasks"] + 1) + "|"]
    for name, es in stops.items():
        cells = ["" if e is None else (str(e["stopped_at"]) if e["stopped_at"] is not None else "-") for e in es]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
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
    from fastfreeze.lab.continual.plots import (  # headless
        plot_accuracy_matrices,
        plot_dense,
        plot_orthogonality,
        plot_recovery_curve,
    )

    out = Path(out)
    plots: dict[str, str] = {}
    plot_accuracy_matrices(results["arms"], out / "accuracy_matrix.png")
    plots["matrices"] = "accuracy_matrix.png"
    if plot_dense(results["arms"], out / "task0_during_task1.png"):
        plots["dense"] = "task0_during_task1.png"
    if plot_recovery_curve(results["arms"], out / "recovery_curve.png"):
        plots["recovery_curve"] = "recovery_curve.png"
    if plot_orthogonality(results["arms"], out / "orthogonality.png"):
        plots["orthogonality"] = "orthogonality.png"
    results["plots"] = plots
    _io.write_json(out / "results.json", results, indent=2, default=str)
    _io.write_text(out / "report.md", render_report(results, plots))
    paths = {"results": out / "results.json", "report": out / "report.md"}
    paths.update({k: out / v for k, v in plots.items()})
    return paths


def format_curve(results: dict) -> str:
    """The demo's recovery curve: one row per checkpoint step, unrecovered / recovered Task-0 accuracy per arm."""
    curves = {n: a["recovery_curve"] for n, a in results["arms"].items() if a.get("recovery_curve")}
    if not curves:
        return ""
    steps = sorted({p["step"] for c in curves.values() for p in c["points"]})
    lines = ["| Task-1 step | " + " | ".join(f"{n} unrecovered -> recovered" for n in curves) + " |",
             "|---" * (len(curves) + 1) + "|"]
    for s in steps:
        cells = []
        for c in curves.values():
            p = next((p for p in c["points"] if p["step"] == s), None)
            cells.append("" if p is None else f"{_pct(p['before'])}% -> {_pct(p['after'])}%")
        lines.append(f"| {s} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def findings(results: dict, window: int = 150) -> list[str]:
    """The demo's three findings, with their numbers: collapse, recovery from the collapse checkpoint, Freeze vs SEQ."""
    arms = results["arms"]
    seq = next((a for a in arms.values() if a["strategy"]["name"] == "seq"), None)
    frz = [(n, a) for n, a in arms.items() if a["strategy"]["name"] == "freeze"]
    out = []
    if seq and seq.get("dense"):
        h = [r for r in seq["dense"]["history"] if r["step"] <= window] or seq["dense"]["history"]
        low = min(h, key=lambda r: r["exact_match"])
        out.append(f"1. Collapse: under SEQ, Task-0 accuracy fell from {_pct(h[0]['exact_match'])}% to "
                   f"{_pct(low['exact_match'])}% by step {low['step']} of Task 1 (target: within the first {window}).")
    few = (seq or {}).get("recovery_few")
    if few:
        pre = seq["recovery_curve"]["points"][0]["before"] if seq.get("recovery_curve") else seq["accuracy_matrix"][0][0]
        parts = [f"{r['examples']} examples -> {_pct(r['after'])}% ({_share(r['after'], pre)})" for r in few["rows"]]
        out.append(f"2. Recovery from the step-{few['step']} checkpoint (Task-0 {_pct(few['rows'][0]['before'])}%, "
                   f"pre-forgetting {_pct(pre)}%): " + "; ".join(parts) + " of the pre-forgetting accuracy "
                   "(target: >= 80%).")
    if seq and frz:
        R = seq["accuracy_matrix"]
        items = [f"{n} {_pct(a['accuracy_matrix'][-1][0])}% (last task {_pct(a['accuracy_matrix'][-1][-1])}%)"
                 for n, a in frz]
        out.append(f"3. Freeze vs SEQ after the last task: Task-0 SEQ {_pct(R[-1][0])}% (last task "
                   f"{_pct(R[-1][-1])}%), " + ", ".join(items) + ".")
    return out
