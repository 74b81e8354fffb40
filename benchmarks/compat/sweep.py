"""Compatibility sweep: does FastFreezeTrainer train every registered causal-LM type exactly like the plain recipe?

For each model type of the installed transformers (`MODEL_FOR_CAUSAL_LM_MAPPING_NAMES`), a tiny
random model (see `fastfreeze.testing.tiny_models`) trains 6 steps three times from the same weights:
FastFreezeTrainer(k=2), FastFreezeTrainer(k=2, cache="memory"), and a plain `transformers.Trainer`
with `requires_grad=False` on exactly what fastfreeze froze (the runs and the comparison:
`benchmarks/compat/check.py`). Separately, the user's recipe (the input embedding + blocks[:2], found without
fastfreeze) must be a subset of what fastfreeze froze, and anything frozen beyond it must be
stated in `FreezeReport.extra_frozen`. This module classifies each type, writes the table and is
the CLI.

Classes: exact | exact without cache | refused | not applicable | different | crash.

Usage:
    python -m benchmarks.compat                       # every registered type -> benchmarks/results/
    python -m benchmarks.compat --subset ci           # the named CI list
    python -m benchmarks.compat --types llama,gpt2 --out /tmp/compat --timeout 120
    python -m benchmarks.compat --subset ci --list     # the types only, one a line
Exit code 1 if any type is `different` or `crash`, else 0.
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import datetime as _dt
import gc
import logging
import os
import platform
import signal
import sys
import threading
import time
import warnings
from pathlib import Path

# check first: it sets up the environment (Triton interpreter on CPU) before transformers loads.
from benchmarks.compat.check import (BATCH, K, LR, N_ROWS, ROOT, STEPS, TOL, WIDTH, Refused, compare, crash_result,
                                     first_line, frames, make_rows, recipe_frozen, relabel, run_ff, run_ref,
                                     sanity_check)
from fastfreeze.testing.tiny_models import build_model, not_applicable_reason, text_config, tiny_config

import torch  # noqa: E402 - after the environment set-up above
import transformers  # noqa: E402
from torch import nn  # noqa: E402

from fastfreeze import _io  # noqa: E402
from fastfreeze._hf_compat import causal_lm_model_types  # noqa: E402

CLASSES = ("exact", "exact without cache", "refused", "not applicable", "different", "crash")

CI_SUBSET = (
    "gemma3n_text", "gemma4_text", "deepseek_v4", "qwen3_moe", "mixtral", "gpt_oss", "lfm2", "zamba2", "jamba",
    "falcon_h1", "olmo2", "olmo3", "granite", "smollm3", "llama", "mistral", "qwen2", "qwen3", "phi3", "gemma2",
    "gemma3_text", "gpt_neox", "gpt2", "zamba", "bloom", "biogpt", "xglm", "ctrl", "roformer", "bamba", "xlnet",
    "rwkv",
)
SUBSETS = {"ci": CI_SUBSET}


def registered_types() -> list[str]:
    return causal_lm_model_types()


def select_types(types: str | None = None, subset: str | None = None) -> list[str]:
    """The types to sweep: an explicit comma list, a named subset (registered ones only), or all."""
    registered = registered_types()
    if types:
        wanted = [t.strip() for t in types.split(",") if t.strip()]
        unknown = [t for t in wanted if t not in registered]
        if unknown:
            raise SystemExit(f"not registered in transformers {transformers.__version__}: {unknown}")
        return wanted
    if subset:
        if subset not in SUBSETS:
            raise SystemExit(f"unknown subset {subset!r}; choose one of {sorted(SUBSETS)}")
        return [t for t in SUBSETS[subset] if t in registered]
    return registered


# ---------------------------------------------------------------------------------------------- one type
class _Timeout(BaseException):
    """Raised by the per-type alarm (a BaseException, so model code's `except Exception` can't swallow it)."""


@contextlib.contextmanager
def _alarm(seconds: int | None):
    if not seconds or threading.current_thread() is not threading.main_thread():
        yield
        return

    def fire(signum, frame):
        raise _Timeout(f"timed out after {seconds} s")

    previous = signal.signal(signal.SIGALRM, fire)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def check_type(model_type: str, k: int = K, timeout: int | None = 120) -> dict:
    """Run the three arms for one model type and classify it. Never raises (except KeyboardInterrupt)."""
    t0 = time.perf_counter()
    result = {"type": model_type, "class": None, "detail": "", "extras": {}, "recipe_note": ""}
    try:
        with _alarm(timeout), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            result.update(_check(model_type, k))
    except _Timeout as e:
        result.update({"class": "crash", "detail": f"timeout: {e}"})
    except Exception as e:  # noqa: BLE001 - a sweep reports every failure, it does not stop
        result.update(crash_result(e, ""))
    result["seconds"] = round(time.perf_counter() - t0, 2)
    gc.collect()
    return result


class _Classified(Exception):
    """A type classified before the comparison (not applicable, refused, crash); carries its result."""

    def __init__(self, result: dict):
        super().__init__(result.get("class"))
        self.result = result


def _check(model_type: str, k: int) -> dict:
    try:
        model, vocab = _tiny_model(model_type)
        rows = make_rows(vocab)
        recipe, note = recipe_frozen(copy.deepcopy(model), k)
        out = {"recipe_note": note, "model_class": type(model).__name__,
               "num_params": sum(p.numel() for p in model.parameters())}
        ff, ffc, cache_refused = _fastfreeze_runs(model, rows, k, out)
        fails = _differences(model, rows, recipe, ff, ffc, out)
    except _Classified as c:
        return c.result
    rounding = _adam_rounding_only(fails, model, rows, recipe, k)
    if rounding:
        fails, out["note"] = [], rounding
    out["extras"] = ff["extra"]
    out["extra_frozen_params"] = sorted(ff["frozen"] - recipe)
    out["frozen_params"] = len(ff["frozen"])
    out["cache_hits"] = ffc["cache_hits"] if ffc else None
    if fails:
        return {**out, "class": "different", "detail": "; ".join(fails)}
    if cache_refused:
        return {**out, "class": "exact without cache", "detail": f"cache refused: {cache_refused}"}
    return {**out, "class": "exact", "detail": f"cache hits {ffc['cache_hits']}" + (f"; {out['note']}" if out.get("note") else "")}


def _tiny_model(model_type: str) -> tuple[nn.Module, int]:
    """The type's tiny model and vocabulary size; not applicable when the model itself cannot train."""
    reason = not_applicable_reason(model_type)
    if reason:
        raise _Classified({"class": "not applicable", "detail": reason})
    try:
        cfg = tiny_config(model_type)
        reason = not_applicable_reason(model_type, cfg)
        if reason:
            raise _Classified({"class": "not applicable", "detail": reason})
        model = build_model(cfg, seed=0)
        vocab = text_config(model.config).vocab_size
        sanity_check(copy.deepcopy(model), vocab)
    except _Classified:
        raise
    except Exception as e:  # noqa: BLE001
        last, _ = frames(e)
        raise _Classified({"class": "not applicable",
                           "detail": f"model itself fails: {type(e).__name__}: {first_line(e)} @ {last}"}) from e
    return model, vocab


def _fastfreeze_runs(model: nn.Module, rows: list[dict], k: int, out: dict):
    """The fastfreeze arm without and with the cache: (run, cache run or None, why the cache was refused)."""
    try:
        ff = run_ff(copy.deepcopy(model), rows, cache=None, k=k)
    except Refused as r:
        raise _Classified({**out, "class": "refused", "detail": f"{r} (at {r.stage})"}) from r
    except Exception as e:  # noqa: BLE001
        raise _Classified({**out, **crash_result(e, "fastfreeze run: ")}) from e
    try:
        return ff, run_ff(copy.deepcopy(model), rows, cache="memory", k=k), None
    except Refused as r:
        return ff, None, f"{r} (at {r.stage})"
    except Exception as e:  # noqa: BLE001
        raise _Classified({**out, **crash_result(e, "cache run: "), "extras": ff["extra"]}) from e


def _differences(model: nn.Module, rows: list[dict], recipe: set[str], ff: dict, ffc: dict | None, out: dict) -> list[str]:
    """The failed checks of both fastfreeze runs against a plain Trainer with the same freeze; a model
    whose plain training does not reproduce itself is not applicable instead."""
    refs: dict[frozenset, dict] = {}

    def ref_for(frozen: set[str]) -> dict:
        key = frozenset(frozen)
        if key not in refs:
            refs[key] = run_ref(copy.deepcopy(model), rows, frozen)
        return refs[key]

    try:
        fails = [f"no cache: {f}" for f in compare(ff, ref_for(ff["frozen"]), recipe, cache=False)]
        if ffc is not None:
            fails += [f"cache: {f}" for f in compare(ffc, ref_for(ffc["frozen"]), recipe, cache=True)]
    except Exception as e:  # noqa: BLE001
        raise _Classified({**out, **crash_result(e, "reference run: "), "extras": ff["extra"]}) from e
    if fails:
        # Before blaming fastfreeze: does the plain recipe reproduce itself? (Some models reseed or
        # draw from an unseeded source while training.)
        again = run_ref(copy.deepcopy(model), rows, ff["frozen"])
        plain = {"losses": again["losses"], "params": again["params"], "frozen": ff["frozen"], "extra": {},
                 "frozen_changed": [], "cache_hits": None}
        drift = compare(plain, ref_for(ff["frozen"]), ff["frozen"], cache=False)
        if drift:
            why = f"training is not reproducible (two plain runs differ: {relabel(drift[0])})"
            raise _Classified({**out, "class": "not applicable", "detail": f"model itself fails: {why}"})
    return fails


def _adam_rounding_only(fails: list[str], model: nn.Module, rows: list[dict], recipe: set[str], k: int) -> str | None:
    """A cache run whose losses match but one parameter is just off: rows computed in other batch
    compositions round differently in the last bit (MoE expert grouping, zero-filled pads), and AdamW's
    1/sqrt(v) scaling blows that up in a tensor whose true gradient is zero (a key bias, which softmax
    ignores). Rerun both arms with SGD, which does not amplify: exact there means rounding, not a
    different computation. Returns the note, or None when that is not the case."""
    if not fails or not all(f.startswith("cache: param ") for f in fails):
        return None
    ffc = run_ff(copy.deepcopy(model), rows, cache="memory", k=k, optim="sgd")
    ref = run_ref(copy.deepcopy(model), rows, ffc["frozen"], optim="sgd")
    if compare(ffc, ref, recipe, cache=True):
        return None
    return (f"AdamW-amplified rounding only ({fails[0][len('cache: '):]}); the cache run is exact under SGD "
            "with the same data")


# ---------------------------------------------------------------------------------------------- sweep
def run_sweep(types: list[str], timeout: int | None = 120, k: int = K, progress=None) -> list[dict]:
    results = []
    for i, t in enumerate(types):
        r = check_type(t, k=k, timeout=timeout)
        results.append(r)
        if progress:
            progress(f"[{i + 1}/{len(types)}] {t}: {r['class']} ({r['seconds']} s) {r['detail'][:160]}")
    return results


def counts(results: list[dict]) -> dict[str, int]:
    return {c: sum(r["class"] == c for r in results) for c in CLASSES}


def _machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    gpu = f", {torch.cuda.get_device_name(0)}" if torch.cuda.is_available() else ""
    return f"{os.cpu_count()}-core CPU ({cpu}){gpu}, sweep on CPU, torch threads {torch.get_num_threads()}"


def meta(seconds: float, types: list[str], timeout) -> dict:
    return {
        "transformers": transformers.__version__, "torch": torch.__version__, "python": platform.python_version(),
        "date": _dt.datetime.now(_dt.timezone.utc).strftime("%a %b %d %H:%M:%S UTC %Y"), "machine": _machine(),
        "seconds": round(seconds, 1), "types": len(types), "timeout_s": timeout, "num_frozen_layers": K,
        "setup": f"{N_ROWS} rows of length 5-{WIDTH} right-padded to {WIDTH}, batch {BATCH}, {STEPS} AdamW steps "
                 f"lr {LR}, fp32 eager attention; tolerance {TOL} (losses, params), frozen params bitwise",
    }


def _md_cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def render_markdown(results: list[dict], info: dict) -> str:
    c = counts(results)
    minutes, secs = divmod(int(round(info["seconds"])), 60)
    lines = [
        f"# fastfreeze compatibility sweep: transformers {info['transformers']}",
        "",
        f"- transformers {info['transformers']}, torch {info['torch']}, Python {info['python']}",
        f"- date: {info['date']}",
        f"- machine: {info['machine']}",
        f"- total run time: {minutes} min {secs} s for {info['types']} model types "
        f"(per-type timeout {info['timeout_s']} s)",
        f"- setup: k={info['num_frozen_layers']}, {info['setup']}",
        "- counts: " + ", ".join(f"{name} {n}" for name, n in c.items()),
        "",
        "| type | class | extras frozen | detail |",
        "|---|---|---|---|",
    ]
    for r in results:
        extras = ", ".join(r.get("extras") or {}) or "-"
        detail = r["detail"] + (f" [{r['recipe_note']}]" if r.get("recipe_note") else "")
        lines.append(f"| {r['type']} | {r['class']} | {_md_cell(extras)} | {_md_cell(detail)} |")
    return "\n".join(lines) + "\n"


def write_report(results: list[dict], info: dict, out_dir: str | os.PathLike) -> tuple[Path, Path]:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    stem = f"compat_transformers-{info['transformers']}"
    js, md = out / f"{stem}.json", out / f"{stem}.md"
    _io.write_json(js, {"meta": info, "counts": counts(results), "results": results}, indent=1, default=str)
    _io.write_text(md, render_markdown(results, info))
    return js, md


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.compat", description=__doc__.split("\n")[0])
    ap.add_argument("--types", help="comma-separated model types (default: every registered causal-LM type)")
    ap.add_argument("--subset", choices=sorted(SUBSETS), help="a named list of types")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results"), help="output directory")
    ap.add_argument("--timeout", type=int, default=120, help="seconds per model type (0: none)")
    ap.add_argument("--list", action="store_true", help="print the types it would sweep, one a line, and stop")
    args = ap.parse_args(argv)
    if args.list:
        print("\n".join(select_types(args.types, args.subset)))
        return 0
    torch.set_num_threads(1)
    transformers.logging.set_verbosity_error()
    logging.getLogger("fastfreeze").setLevel(logging.ERROR)  # what it reports is in the results already
    types = select_types(args.types, args.subset)
    t0 = time.perf_counter()
    results = run_sweep(types, timeout=args.timeout or None, progress=lambda s: print(s, file=sys.stderr, flush=True))
    info = meta(time.perf_counter() - t0, types, args.timeout or None)
    js, md = write_report(results, info, args.out)
    c = counts(results)
    print(", ".join(f"{name}: {n}" for name, n in c.items()))
    print(f"wrote {js} and {md} ({info['seconds']} s)")
    return 1 if c["different"] or c["crash"] else 0


if __name__ == "__main__":
    sys.exit(main())
