"""Markdown table for bench_placement results: per arm, losses, construction time, step time, peak memory, each against the seed-snippet arm."""
from __future__ import annotations


def _ratio(x: float, ref: float) -> str:
    return f"{x / ref:.3f}x" if ref else "-"


def render(report: dict) -> str:
    """Usage: render(json.load(open("benchmarks/results/placement_1b.json")))"""
    m, arms = report["machine"], report["arms"]
    seed = next((r for r in arms if r["arm"] == "seed"), arms[0])
    lines = [f"# bench_placement: {report['shape']} ({report['spec']}), k={report['k']}, {report['steps']} steps of "
             f"1 x {report['seq']} tokens, {report['rows']} rows",
             "",
             f"Machine: {m['cpu']}, {m['cores']} cores, {m['mem_gb']} GB, shared with other jobs (timings are noisy; "
             f"memory is this process's own). torch {m['torch']}, transformers {m['transformers']}, "
             f"Python {m['python']}. Date (UTC): {m['date_utc']}.",
             "",
             "| arm | losses | construct s | median step s | construction peak over its start GB | "
             "peak RSS after construction GB | peak RSS run GB | run peak vs seed | losses == seed |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in arms:
        steps, n = sorted(r["step_s"]), len(r["step_s"])
        median = (steps[(n - 1) // 2] + steps[n // 2]) / 2 if n else float("nan")
        losses = ", ".join(f"{x:.4f}" for x in r["losses"])
        over = r.get("construct_peak_over_gb")
        over = "-" if over is None else f"{over:.2f}"
        lines.append(f"| {r['arm']} | {losses} | {r['construct_s']:.1f} | {median:.1f} | {over} | {r['rss_constructed_gb']:.2f} | "
                     f"{r['rss_end_gb']:.2f} | {_ratio(r['rss_end_gb'], seed['rss_end_gb'])} | "
                     f"{r['losses'] == seed['losses']} |")
    lines += ["", "Probe seconds (FastFreezeTrainer arms): " + ", ".join(
        f"{r['arm']}: {r['probe_s']:.1f}" for r in arms if r.get("probe_s") is not None),
        f"Trainable parameters: {seed['trainable_params']:,}. Model built: peak RSS {seed['rss_model_gb']:.2f} GB. "
        "Step 1 computes the prefix; with rows=1, step 2 of the cache arm is a cache hit.", ""]
    return "\n".join(lines)
