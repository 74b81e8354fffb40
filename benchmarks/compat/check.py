"""One model type through the compatibility check: its data, the user's recipe, the three training arms, the comparison.

A tiny random model (`fastfreeze.testing.tiny_models`) trains 6 steps three times from the same weights:
FastFreezeTrainer(k=2), FastFreezeTrainer(k=2, cache="memory"), and a plain `transformers.Trainer`
with `requires_grad=False` on exactly what fastfreeze froze (`run_ff`, `run_ref`). `compare` lists
what differs: the user's recipe (the input embedding + blocks[:2], found without fastfreeze,
`recipe_frozen`) must be a subset of what fastfreeze froze, anything frozen beyond it must be
stated in `FreezeReport.extra_frozen`, and losses and trained weights must agree. The sweep that
classifies every registered type is `benchmarks/compat/sweep.py` (`python -m benchmarks.compat`).

Usage:
    ff = run_ff(copy.deepcopy(model), rows); ref = run_ref(copy.deepcopy(model), rows, ff["frozen"])
    compare(ff, ref, recipe_frozen(model)[0], cache=False)   # [] when exact
"""
from __future__ import annotations

import os
import tempfile
import traceback
from pathlib import Path

import torch

# Triton runs on CPU only through its interpreter, which must be on before anything imports triton.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("WANDB_DISABLED", "true")

import transformers  # noqa: E402
from torch import nn  # noqa: E402

from fastfreeze.testing.tiny_models import text_config  # noqa: E402
from fastfreeze.data import PaddingCollator  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
K = 2
WIDTH = 12  # every batch is right-padded to this width, so cached and recomputed rows see the same padding
N_ROWS, BATCH, STEPS, LR = 16, 4, 6, 1e-3  # 4 steps per epoch: steps 5-6 are the second epoch (cache hits)
TOL = 1e-5


# ---------------------------------------------------------------------------------------------- data
def make_rows(vocab: int, n: int = N_ROWS, seed: int = 1) -> list[dict]:
    g = torch.Generator().manual_seed(seed)
    rows = []
    for _ in range(n):
        t = int(torch.randint(5, WIDTH + 1, (1,), generator=g))
        ids = torch.randint(1, vocab, (t,), generator=g).tolist()
        rows.append({"input_ids": ids, "labels": ids})
    return rows


def fixed_width_collator() -> PaddingCollator:
    """Right-pads every row to WIDTH (ids 0, labels -100 on pads)."""
    return PaddingCollator(0, pad_to=WIDTH)


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
        super().__init__(f"{type(error).__name__}: {first_line(error)}")
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
                data_collator=fixed_width_collator(), freeze_config=FreezeConfig(num_frozen_layers=k, cache=cache))
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
                              data_collator=fixed_width_collator())
        _quiet(trainer)
        trainer.recorded = []
        trainer.train()
        result = {"losses": list(trainer.recorded), "params": _params(model)}
        del trainer
    return result


def sanity_check(model: nn.Module, vocab: int) -> None:
    """A plain forward + backward on one padded batch; raises if the model itself cannot train."""
    batch = fixed_width_collator()(make_rows(vocab, n=BATCH, seed=3))
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


def relabel(check: str) -> str:
    return check.replace(": ff ", ": run 2 ").replace(" vs ref ", " vs run 1 ")


def _short(names: list[str], n: int = 4) -> str:
    return ", ".join(names[:n]) + (f" (+{len(names) - n} more)" if len(names) > n else "")


def first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0][:300] if text else ""


def frames(e: BaseException) -> tuple[str, str | None]:
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


def crash_result(e: BaseException, where: str) -> dict:
    last, ours = frames(e)
    detail = f"{where}{type(e).__name__}: {first_line(e)} @ {last}"
    if ours and ours != last:
        detail += f" (fastfreeze: {ours})"
    return {"class": "crash", "detail": detail, "exception": type(e).__name__, "frame": last, "fastfreeze_frame": ours}
