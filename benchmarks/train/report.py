"""bench_train's report: paired step ratios vs naive, FLOP-model predictions beside them, the targets, extras and markdown."""
from __future__ import annotations

import statistics

from benchmarks.train import flop_model
from benchmarks.train import presets as tp

FREEZE_KINDS = ("naive", "liger", "ff", "ff-warm", "ff-cold", "floor", "floor-loop")


def step_ratio(a: dict, b: dict) -> float:
    """a's step time over b's. Arms of one group ran the same batch in the same round, moments apart, so the
    median of per-round ratios cancels load bursts that span rounds; other pairs: ratio of medians."""
    w = a["schedule"]["warmup"]
    ta_, tb = a["step_times"][w:], b["step_times"][w:]
    if a["group"] == b["group"] and a["schedule"]["window"] == 1 and len(ta_) == len(tb) and ta_:
        return statistics.median(x / y for x, y in zip(ta_, tb))
    return a["median_step_s"] / b["median_step_s"]


def add_ratios(rows: list[dict], preset: tp.Preset | None = None) -> None:
    """Ratios against naive freezing at the same k and checkpointing, preferring the same group, and (with
    a preset) the FLOP model's predicted step ratio beside them."""
    def naive_for(r):
        cands = [n for n in rows if n["kind"] == "naive" and n["k"] == r["k"] and n["ckpt"] == r["ckpt"]
                 and "median_step_s" in n]
        same = [n for n in cands if n["group"] == r["group"]]
        return (same or cands or [None])[0]

    for r in rows:
        if preset is not None and r.get("kind") in flop_model.ARMS:
            r["predicted_step_vs_naive"] = flop_model.predicted_ratio(preset, r["kind"], r["k"], r["ckpt"])
        n = naive_for(r)
        if n is None or "median_step_s" not in r:
            continue
        r["step_vs_naive"] = step_ratio(r, n)
        r["tps_vs_naive"] = 1 / r["step_vs_naive"]  # same batches in every arm
        if r.get("peak_mem_bytes") and n.get("peak_mem_bytes"):
            r["mem_vs_naive"] = r["peak_mem_bytes"] / n["peak_mem_bytes"]


def _find(rows, kind, k, ckpt):
    return next((r for r in rows if r["kind"] == kind and r["k"] == k and r["ckpt"] == ckpt
                 and "median_step_s" in r), None)


def flop_model_deviation(rows: list[dict]) -> tuple[float, int] | None:
    """max |predicted / measured - 1| of the step ratio vs naive over the arms that have both (naive excluded)."""
    devs = [abs(r["predicted_step_vs_naive"] / r["step_vs_naive"] - 1) for r in rows
            if r.get("kind") != "naive" and r.get("step_vs_naive") and r.get("predicted_step_vs_naive")]
    return (max(devs), len(devs)) if devs else None


def check_targets(rows: list[dict], preset: tp.Preset, k: int, kind: str | None = None) -> list[dict]:
    """The issues' targets, each {name, value, limit, ok} (ok None when an arm is missing). `kind` "gpu" or
    "cpu" picks the target set (default: from the preset name); the GPU suite's CPU rehearsal passes "gpu"."""
    out = []
    kind = kind or ("gpu" if preset.name.startswith("gpu") else "cpu")

    def target(name, num, den, limit, lower_is_better=True, key="median_step_s"):
        if num is None or den is None or not num.get(key) or not den.get(key):
            out.append({"name": name, "value": None, "limit": limit, "ok": None})
            return
        v = step_ratio(num, den) if key == "median_step_s" else num[key] / den[key]
        out.append({"name": name, "value": v, "limit": limit, "ok": v <= limit if lower_is_better else v >= limit})

    warm, warm_c = _find(rows, "ff-warm", k, False), _find(rows, "ff-warm", k, True)
    if kind == "gpu":
        naive, liger = _find(rows, "naive", k, False), _find(rows, "liger", k, False)
        target("warm tokens/s vs suffix-only floor >= 0.95x", warm, _find(rows, "floor", k, False), 0.95, False,
               "tokens_per_s")
        target("warm tokens/s vs naive >= 1.5x", warm, naive, 1.5, False, "tokens_per_s")
        target("warm tokens/s vs naive+Liger >= 1.25x", warm, liger, 1.25, False, "tokens_per_s")
        target("warm peak memory vs naive <= 0.5x", warm, naive, 0.5, True, "peak_mem_bytes")
    else:
        target("warm step vs suffix-only floor <= 1.05x", warm, _find(rows, "floor", k, False), 1.05)
        target("warm step vs naive < 0.85x", warm, _find(rows, "naive", k, False), 0.85)
        target("warm+ckpt step vs naive+ckpt <= 0.70x", warm_c, _find(rows, "naive", k, True), 0.70)
    if kind == "cpu":
        dev = flop_model_deviation(rows)
        if dev is not None:
            out.append({"name": f"FLOP model: predicted vs measured step/naive, max relative difference "
                                f"({dev[1]} arms)", "value": dev[0], "limit": 0.05, "ok": dev[0] <= 0.05})
    for ckpt in (False, True):
        losses = {r["name"]: r["final_loss"] for r in rows if r["kind"] in FREEZE_KINDS and r["k"] == k
                  and r["ckpt"] == ckpt and r.get("final_loss") is not None and r["schedule"] == vars(preset.schedule)}
        if len(losses) >= 2:
            vals = list(losses.values())
            spread = (max(vals) - min(vals)) / abs(statistics.median(vals))
            # fp32: arms differ only in op order (batched cache build, zero-padded boundaries): ~1e-6;
            # bf16 rounding of the same differences over a few steps stays well under 1e-2.
            limit = 1e-3 if preset.dtype == "float32" else 2e-2
            out.append({"name": f"final losses of freeze arms agree{' (ckpt)' if ckpt else ''} "
                                 f"(relative spread, {len(vals)} arms)", "value": spread, "limit": limit,
                        "ok": spread <= limit})
    return out


def _fmt(v, spec=".3f"):
    return "-" if v is None else format(v, spec)


def markdown(result: dict) -> str:
    m = result["meta"]
    lines = [f"## bench_train `{m['preset']}` — {m['device']}", "",
             f"{m['date']} · commit `{m['git_commit']}` · torch {m['versions']['torch']} · transformers "
             f"{m['versions']['transformers']} · load average before/after {m['loadavg_before']} / {m['loadavg_after']}",
             f"`{m['command']}`", "",
             "| arm | k | ckpt | median step (s) | tokens/s | peak mem (MB) | step / naive* | predicted** | "
             "tok/s / naive* | mem / naive | final loss |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in result["arms"]:
        if "error" in r:
            lines.append(f"| {r['kind']} | {r['k']} | {'on' if r['ckpt'] else 'off'} | FAILED: {r['error'][:80]} "
                         "| | | | | | | |")
            continue
        mem = r.get("peak_mem_bytes")
        lines.append(f"| {r['kind']} | {r['k']} | {'on' if r['ckpt'] else 'off'} | {_fmt(r.get('median_step_s'))} | "
                     f"{_fmt(r.get('tokens_per_s'), '.0f')} | {_fmt(mem / 2**20 if mem else None, '.0f')} | "
                     f"{_fmt(r.get('step_vs_naive'), '.2f')} | {_fmt(r.get('predicted_step_vs_naive'), '.2f')} | "
                     f"{_fmt(r.get('tps_vs_naive'), '.2f')} | "
                     f"{_fmt(r.get('mem_vs_naive'), '.2f')} | {_fmt(r.get('final_loss'), '.5f')} |")
    lines += ["", "*Ratios within a group: median over rounds of the per-round step-time ratio (same batch, "
              "moments apart); tokens/s = mean real tokens per step / median step time.",
              "**FLOP model (benchmarks/train/flop_model.py): step FLOPs of the arm / naive's, from the shapes alone "
              "(attention, MLP, head, dX-only backward through frozen blocks, checkpoint recompute).",
              f"Memory: {m['memory_method']}.", *[f"Note: {n}" for n in m["notes"]], ""]
    for name, block in result.get("extra", {}).items():
        lines.append(f"- {name}: {block}")
    lines += ["", "Targets:"]
    for t in result["targets"]:
        state = "n/a (arm missing)" if t["ok"] is None else ("PASS" if t["ok"] else "FAIL")
        lines.append(f"- {state}: {t['name']}: {_fmt(t['value'], '.4g')} (limit {t['limit']})")
    return "\n".join(lines) + "\n"


def extras(rows: list[dict], k: int) -> dict:
    """Cache build throughput vs the prefix forward inside training, and cache hit counts."""
    out = {}
    warm, ff = _find(rows, "ff-warm", k, False), _find(rows, "ff", k, False)
    if warm and warm.get("cache_build"):
        b = warm["cache_build"]
        out["cache build (precompute pass)"] = (f"{b['tokens']} tokens in {b['seconds']:.2f}s = "
                                                f"{b['tokens_per_s']:.0f} tokens/s; cache {warm.get('cache')}")
    if ff and ff.get("prefix_in_training"):
        p = ff["prefix_in_training"]
        out["prefix forward at training batch size (no grad)"] = (f"{p['tokens']} tokens in {p['seconds']:.2f}s = "
                                                                  f"{p['tokens_per_s']:.0f} tokens/s")
    if warm and ff and warm.get("median_step_s") and ff.get("median_step_s"):
        d = ff["median_step_s"] - warm["median_step_s"]
        out["step time saved by the warm cache (ff - ff-warm)"] = (
            f"{d:.3f}s/step = {ff.get('tokens_per_step', 0) / d:.0f} tokens/s of prefix work" if d > 0 else f"{d:.3f}s")
    dev = flop_model_deviation(rows)
    if dev is not None:
        out["FLOP model vs measured (step / naive)"] = f"max relative difference {100 * dev[0]:.1f}% over {dev[1]} arms"
    cold = _find(rows, "ff-cold", k, False)
    if cold:
        out["cold cache (lazy fill, first epoch)"] = (f"median {cold['median_step_s']:.3f}s/step over "
                                                     f"{cold['measured_steps']} steps; cache {cold.get('cache')}")
    return out
