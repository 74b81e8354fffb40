"""Compatibility sweep: does FastFreezeTrainer train every registered causal-LM type exactly like the plain recipe?

For each model type of the installed transformers (`MODEL_FOR_CAUSAL_LM_MAPPING_NAMES`), a tiny
random model (see `compat_models`) trains 6 steps three times from the same weights:
FastFreezeTrainer(k=2), FastFreezeTrainer(k=2, cache="memory"), and a plain `transformers.Trainer`
with `requires_grad=False` on exactly what fastfreeze froze. Separately, the user's recipe (the
input embedding + blocks[:2], found without fastfreeze) must be a subset of what fastfreeze froze,
and anything frozen beyond it must be stated in `FreezeReport.extra_frozen`.

Classes: exact | exact without cache | refused | not applicable | different | crash.

Usage:
    python -m benchmarks.compat                       # every registered type -> benchmarks/results/
    python -m benchmarks.compat --subset ci           # the named CI list
    python -m benchmarks.compat --types llama,gpt2 --out /tmp/compat --timeout 120
Exit code 1 if any type is `different` or `crash`, else 0.
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import datetime as _dt
import gc
import json
import logging
import os
import platform
import signal
import sys
import tempfile
import threading
import time
import traceback
import warnings
from pathlib import Path

import torch

# Triton runs on CPU only through its interpreter, which must be on before anything imports triton.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("WANDB_DISABLED", "true")

import transformers  # noqa: E402
from torch import nn  # noqa: E402

from benchmarks.compat_models import build_model, not_applicable_reason, text_config, tiny_config  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
K = 2
WIDTH = 12  # every batch is right-padded to this width, so cached and recomputed rows see the same padding
N_ROWS, BATCH, STEPS, LR = 16, 4, 6, 1e-3  # 4 steps per epoch: steps 5-6 are the second epoch (cache hits)
TOL = 1e-5
CLASSES = ("exact", "exact without cache", "refused", "not applicable", "different", "crash")

CI_SUBSET = (
    "gemma3n_text", "gemma4_text", "deepseek_v4", "qwen3_moe", "mixtral", "gpt_oss", "lfm2", "zamba2", "jamba",
    "falcon_h1", "olmo2", "olmo3", "granite", "smollm3", "llama", "mistral", "qwen2", "qwen3", "phi3", "gemma2",
    "gemma3_text", "gpt_neox", "gpt2", "zamba", "bloom", "biogpt", "xglm", "ctrl", "roformer", "bamba", "xlnet",
    "rwkv",
)
SUBSETS = {"ci": CI_SUBSET}


def registered_types() -> list[str]:
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    return sorted(MODEL_FOR_CAUSAL_LM_MAPPING_NAMES)


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


# ---------------------------------------------------------------------------------------------- data
def make_rows(vocab: int, n: int = N_ROWS, seed: int = 1) -> list[dict]:
    g = torch.Generator().manual_seed(seed)
    rows = []
    for _ in range(n):
        t = int(torch.randint(5, WIDTH + 1, (1,), generator=g))
        ids = torch.randint(1, vocab, (t,), generator=g).tolist()
        rows.append({"input_ids": ids, "labels": ids})
    return rows


class FixedWidthCollator:
    """Right-pads every row to one width (ids 0, labels -100 on pads)."""

    def __init__(self, width: int = WIDTH):
        self.width = width

    def __call__(self, features):
        ids, mask, labels = [], [], []
        for f in features:
            n, pad = len(f["input_ids"]), self.width - len(f["input_ids"])
            ids.append(list(f["input_ids"]) + [0] * pad)
            labels.append(list(f["labels"]) + [-100] * pad)
            mask.append([1] * n + [0] * pad)
        return {"input_ids": torch.tensor(ids), "attention_mask": torch.tensor(mask), "labels": torch.tensor(labels)}


# ---------------------------------------------------------------------------------------------- recipe
def block_list(model: nn.Module) -> tuple[str | None, list[str]]:
    """The user's view of the decoder blocks: the shallowest nn.ModuleList of length
    config.num_hidden_layers. Returns (path or None, all shallowest candidates)."""
    n = getattr(text_config(model.config), "num_hidden_layers", None)
    cands = [name for name, m in model.named_modules() if isinstance(m, nn.ModuleList) and len(m) > 0 and len(m) == n]
    if not cands:
        return None, []
    depth = min(c.count(".") for c in cands)
    shallow = [c for c in cands if c.count(".") == depth]
    return (shallow[0] if len(shallow) == 1 else None), shallow


def recipe_frozen(model: nn.Module, k: int = K) -> tuple[set[str], str]:
    """The plain recipe, derived without fastfreeze: the parameter names it freezes (input embedding
    + blocks[:k], plus whatever the model already keeps frozen itself) and a note ('' when the block
    list was found unambiguously)."""
    ids: set[int] = {id(p) for p in model.get_input_embeddings().parameters()}
    path, cands = block_list(model)
    note = ""
    if path is None:
        note = f"recipe: no unique block list (candidates {cands or 'none'}); recipe = embedding only"
    else:
        for block in model.get_submodule(path)[:k]:
            ids |= {id(p) for p in block.parameters()}
    # Parameters the model itself creates frozen (e.g. routing-bias statistics) stay frozen under the recipe too.
    ids |= {id(p) for p in model.parameters() if not p.requires_grad}
    return {n for n, p in model.named_parameters() if id(p) in ids}, note


# ---------------------------------------------------------------------------------------------- arms
class _RecordLoss:
    """Records every training micro-batch loss at full precision."""

    recorded: list

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        out = super().compute_loss(model, inputs, return_outputs=return_outputs, num_items_in_batch=num_items_in_batch)
        loss = out[0] if return_outputs else out
        if model.training:
            self.recorded.append(loss.detach().double().item())
        return out


class _RefTrainer(_RecordLoss, transformers.Trainer):
    pass


def _ff_trainer_class():
    from fastfreeze import FastFreezeTrainer

    global _FFTrainer
    if _FFTrainer is None:
        _FFTrainer = type("_FFTrainer", (_RecordLoss, FastFreezeTrainer), {})
    return _FFTrainer


_FFTrainer = None


def _args(out_dir: str, optim: str = "adamw_torch"):
    return transformers.TrainingArguments(
        output_dir=out_dir, max_steps=STEPS, per_device_train_batch_size=BATCH, learning_rate=LR,
        optim=optim, lr_scheduler_type="constant", logging_steps=3, save_strategy="no", report_to=[],
        seed=0, data_seed=0, use_cpu=True, dataloader_num_workers=0, disable_tqdm=True)


def _refusals():
    from fastfreeze import FreezeConfigError, UnsupportedModelError

    return (UnsupportedModelError, FreezeConfigError)


class Refused(Exception):
    """fastfreeze refused the model (UnsupportedModelError / FreezeConfigError); `stage` says when."""

    def __init__(self, error: BaseException, stage: str):
        super().__init__(f"{type(error).__name__}: {_first_line(error)}")
        self.error, self.stage = error, stage


def _quiet(trainer) -> None:
    # Logging still runs (fastfreeze adds its counters there); only the printing of each log is dropped.
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    for cb in (PrinterCallback, ProgressCallback):
        trainer.remove_callback(cb)


def _params(model: nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters()}


def run_ff(model: nn.Module, rows: list[dict], cache: str | None = None, k: int = K, optim: str = "adamw_torch") -> dict:
    """FastFreezeTrainer on `model` (modified in place). Raises Refused for a fastfreeze refusal."""
    from datasets import Dataset
    from fastfreeze import FreezeConfig

    with tempfile.TemporaryDirectory() as out:
        try:
            trainer = _ff_trainer_class()(
                model=model, args=_args(out, optim), train_dataset=Dataset.from_list(rows),
                data_collator=FixedWidthCollator(), freeze_config=FreezeConfig(num_frozen_layers=k, cache=cache))
        except _refusals() as e:
            raise Refused(e, "construction") from e
        _quiet(trainer)
        frozen = {n for n, p in model.named_parameters() if not p.requires_grad}
        report = trainer.freeze_report
        extra = dict(getattr(report, "extra_frozen", None) or {})
        before = {n: p.detach().clone() for n, p in model.named_parameters() if n in frozen}
        trainer.recorded = []
        try:
            trainer.train()
        except _refusals() as e:
            raise Refused(e, "training") from e
        after = dict(model.named_parameters())
        changed = sorted(n for n, t in before.items() if not torch.equal(after[n].detach(), t))
        summary = trainer.cache_summary() if cache else None
        result = {"losses": list(trainer.recorded), "params": _params(model), "frozen": frozen, "extra": extra,
                  "frozen_changed": changed, "cache_hits": summary.hits if summary is not None else None}
        del trainer
    return result


def run_ref(model: nn.Module, rows: list[dict], frozen: set[str], optim: str = "adamw_torch") -> dict:
    """A plain Trainer with requires_grad=False on exactly `frozen` (everything else left as built)."""
    from datasets import Dataset

    for n, p in model.named_parameters():
        if n in frozen:
            p.requires_grad_(False)
    with tempfile.TemporaryDirectory() as out:
        trainer = _RefTrainer(model=model, args=_args(out, optim), train_dataset=Dataset.from_list(rows),
                              data_collator=FixedWidthCollator())
        _quiet(trainer)
        trainer.recorded = []
        trainer.train()
        result = {"losses": list(trainer.recorded), "params": _params(model)}
        del trainer
    return result


def sanity_check(model: nn.Module, vocab: int) -> None:
    """A plain forward + backward on one padded batch; raises if the model itself cannot train."""
    batch = FixedWidthCollator()(make_rows(vocab, n=BATCH, seed=3))
    model.train()
    loss = model(**batch).loss
    if loss is None or not torch.isfinite(loss):
        raise RuntimeError(f"loss is {loss}")
    loss.backward()
    model.zero_grad(set_to_none=True)


# ---------------------------------------------------------------------------------------------- compare
def max_rel_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    """max |a - b| / max |b|, scale-aware and safe near zero."""
    a, b = a.double(), b.double()
    if a.shape != b.shape:
        return float("inf")
    if a.numel() == 0:
        return 0.0
    return ((a - b).abs().max() / b.abs().max().clamp_min(1e-12)).item()


def _covered(name: str, extra: dict) -> bool:
    return name in extra or any(name.startswith(key + ".") for key in extra)


def compare(ff: dict, ref: dict, recipe: set[str], cache: bool) -> list[str]:
    """The failed checks of one fastfreeze run against its reference (empty: exact)."""
    fails = []
    missing = sorted(recipe - ff["frozen"])
    if missing:
        fails.append(f"recipe params left trainable: {_short(missing)}")
    unstated = sorted(n for n in ff["frozen"] - recipe if not _covered(n, ff["extra"]))
    if unstated:
        fails.append(f"frozen without a word: {_short(unstated)}")
    a, b = ff["losses"], ref["losses"]
    if len(a) != len(b):
        fails.append(f"{len(a)} losses vs {len(b)} in the reference")
    worst = None
    for i, (x, y) in enumerate(zip(a, b)):
        rel = abs(x - y) / max(abs(y), 1e-12) if x == x and y == y else float("inf")
        if not rel <= TOL and (worst is None or rel > worst[0]):
            worst = (rel, i, x, y)
    if worst:
        rel, i, x, y = worst
        fails.append(f"loss micro-batch {i + 1}: ff {x:.9g} vs ref {y:.9g} (rel {rel:.2e})")
    worst = None
    for name, t in ref["params"].items():
        other = ff["params"].get(name)
        rel = float("inf") if other is None else max_rel_diff(other, t)
        if not rel <= TOL and (worst is None or rel > worst[0]):
            worst = (rel, name)
    if worst:
        fails.append(f"param {worst[1]}: max rel diff {worst[0]:.2e}")
    if ff["frozen_changed"]:
        fails.append(f"frozen params changed in the fastfreeze arm: {_short(ff['frozen_changed'])}")
    if cache and not ff["cache_hits"]:
        fails.append(f"no cache hits in the 2nd epoch (hits={ff['cache_hits']})")
    return fails


def _relabel(check: str) -> str:
    return check.replace(": ff ", ": run 2 ").replace(" vs ref ", " vs run 1 ")


def _short(names: list[str], n: int = 4) -> str:
    return ", ".join(names[:n]) + (f" (+{len(names) - n} more)" if len(names) > n else "")


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0][:300] if text else ""


def _frames(e: BaseException) -> tuple[str, str | None]:
    """The last frame of the traceback, and the last one inside fastfreeze (file:line)."""
    tb = traceback.extract_tb(e.__traceback__)

    def fmt(f) -> str:
        name = f.filename
        if name.startswith(str(ROOT)):
            name = os.path.relpath(name, ROOT)
        elif "site-packages" + os.sep in name:
            name = name.split("site-packages" + os.sep, 1)[1]
        return f"{name}:{f.lineno}"

    last = fmt(tb[-1]) if tb else "?"
    ours = [f for f in tb if f"{os.sep}fastfreeze{os.sep}" in f.filename]
    return last, (fmt(ours[-1]) if ours else None)


def _crash(e: BaseException, where: str) -> dict:
    last, ours = _frames(e)
    detail = f"{where}{type(e).__name__}: {_first_line(e)} @ {last}"
    if ours and ours != last:
        detail += f" (fastfreeze: {ours})"
    return {"class": "crash", "detail": detail, "exception": type(e).__name__, "frame": last, "fastfreeze_frame": ours}


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
        result.update(_crash(e, ""))
    result["seconds"] = round(time.perf_counter() - t0, 2)
    gc.collect()
    return result


def _check(model_type: str, k: int) -> dict:
    reason = not_applicable_reason(model_type)
    if reason:
        return {"class": "not applicable", "detail": reason}
    try:
        cfg = tiny_config(model_type)
        reason = not_applicable_reason(model_type, cfg)
        if reason:
            return {"class": "not applicable", "detail": reason}
        model = build_model(cfg, seed=0)
        vocab = text_config(model.config).vocab_size
        sanity_check(copy.deepcopy(model), vocab)
    except Exception as e:  # noqa: BLE001
        last, _ = _frames(e)
        return {"class": "not applicable",
                "detail": f"model itself fails: {type(e).__name__}: {_first_line(e)} @ {last}"}
    rows = make_rows(vocab)
    recipe, note = recipe_frozen(copy.deepcopy(model), k)
    out = {"recipe_note": note, "model_class": type(model).__name__,
           "num_params": sum(p.numel() for p in model.parameters())}

    try:
        ff = run_ff(copy.deepcopy(model), rows, cache=None, k=k)
    except Refused as r:
        return {**out, "class": "refused", "detail": f"{r} (at {r.stage})"}
    except Exception as e:  # noqa: BLE001
        return {**out, **_crash(e, "fastfreeze run: ")}
    cache_refused = None
    try:
        ffc = run_ff(copy.deepcopy(model), rows, cache="memory", k=k)
    except Refused as r:
        ffc, cache_refused = None, f"{r} (at {r.stage})"
    except Exception as e:  # noqa: BLE001
        return {**out, **_crash(e, "cache run: "), "extras": ff["extra"]}

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
        return {**out, **_crash(e, "reference run: "), "extras": ff["extra"]}
    if fails:
        # Before blaming fastfreeze: does the plain recipe reproduce itself? (Some models reseed or
        # draw from an unseeded source while training.)
        again = run_ref(copy.deepcopy(model), rows, ff["frozen"])
        first = ref_for(ff["frozen"])
        plain = {"losses": again["losses"], "params": again["params"], "frozen": ff["frozen"], "extra": {},
                 "frozen_changed": [], "cache_hits": None}
        drift = compare(plain, first, ff["frozen"], cache=False)
        if drift:
            why = f"training is not reproducible (two plain runs differ: {_relabel(drift[0])})"
            return {**out, "class": "not applicable", "detail": f"model itself fails: {why}"}
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
    js.write_text(json.dumps({"meta": info, "counts": counts(results), "results": results}, indent=1, default=str))
    md.write_text(render_markdown(results, info))
    return js, md


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.compat", description=__doc__.split("\n")[0])
    ap.add_argument("--types", help="comma-separated model types (default: every registered causal-LM type)")
    ap.add_argument("--subset", choices=sorted(SUBSETS), help="a named list of types")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results"), help="output directory")
    ap.add_argument("--timeout", type=int, default=120, help="seconds per model type (0: none)")
    args = ap.parse_args(argv)
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
