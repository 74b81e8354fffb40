"""Where suggest-k finds its inputs: a continual run's folder (config, checkpoints, data cache, tokenizer) or explicit paths."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import yaml
from datasets import DatasetDict, load_from_disk
from transformers import AutoTokenizer

from fastfreeze.lab.continual.build import load_data_files
from fastfreeze.lab.continual.config import ConfigError


@dataclass
class Inputs:
    """Resolved paths and training settings for one probe (see `resolve`)."""

    model: Path
    previous: Path | None
    data: Path | None
    tokenizer: Path
    old_task: int
    new_task: int
    max_length: int = 64
    training: dict = field(default_factory=dict)
    data_files: dict | None = None


def _is_checkpoint(p: Path) -> bool:
    return (p / "config.json").is_file()


def _checkpoint(p: Path, what: str, flag: str) -> Path:
    if not _is_checkpoint(p):
        raise ConfigError(f"{what} {str(p)!r} is not a save_pretrained folder (no config.json); pass {flag} DIR.")
    return p


def _cache_folder(run: Path, prefix: str, flag: str) -> Path:
    """The run's single data-*/tokenizer-* cache folder (a resumed run with a changed data section has several)."""
    found = sorted(p for p in run.glob(f"{prefix}-*") if p.is_dir())
    if len(found) != 1:
        raise ConfigError(
            f"{run} has {len(found)} {prefix}-* folders ({[p.name for p in found]}); pass {flag} DIR to pick one."
        )
    return found[0]


def _run_defaults(run: Path, new_task: int) -> dict:
    """Paths and settings a continual run folder implies before `new_task`: the model after task new_task-1 (the
    shared trunk's checkpoint) and, for the orthogonality columns, the checkpoint before that task."""
    cfg_path = run / "config.yaml"
    if not cfg_path.is_file():
        raise ConfigError(f"{cfg_path} not found: RUN_DIR must be the output_dir of a `fastfreeze continual` or "
                          "`fastfreeze demo` run (or pass --model, --data and --tokenizer instead).")
    cfg = yaml.safe_load(cfg_path.read_text()) or {}
    data_cfg = cfg.get("data") or {}
    ckpts = run / "checkpoints"
    last = new_task - 1
    prev = ckpts / ("pretrain" if last == 0 else f"trunk/task{last - 1}")
    out = {
        "model": ckpts / f"trunk/task{last}",
        "previous": prev if _is_checkpoint(prev) else None,
        "max_length": int(data_cfg.get("max_length") or 64),
        "training": dict(cfg.get("training") or {}),
        "data_files": data_cfg.get("files"),
        "data": Path(data_cfg["path"]) if data_cfg.get("path") else None,
    }
    if out["data"] is None and out["data_files"] is None:
        out["data"] = _cache_folder(run, "data", "--data")
    tok = data_cfg.get("tokenizer", "word")
    out["tokenizer"] = _cache_folder(run, "tokenizer", "--tokenizer") if tok == "word" else Path(tok)
    return out


def resolve(run_dir=None, model=None, previous=None, data=None, tokenizer=None, old_task=None,
            new_task: int = 1, max_length=None) -> Inputs:
    """Inputs from a run folder, explicit paths overriding it. Raises ConfigError naming the fix.

    Usage: `resolve("runs/demo")` (Task-0 checkpoint -> Task 1), or
    `resolve(model="ckpt", data="dsd_dir", tokenizer="tok_dir", new_task=1)`.
    """
    if new_task < 1:
        raise ConfigError(f"--new-task must be >= 1 (the task after the one the model learned), got {new_task}.")
    old = new_task - 1 if old_task is None else old_task
    if not 0 <= old < new_task:
        raise ConfigError(f"--old-task must be in 0..{new_task - 1} (a task before --new-task {new_task}), got {old}.")
    d: dict = {}
    if run_dir is not None:
        if not Path(run_dir).is_dir():
            raise ConfigError(f"RUN_DIR {str(run_dir)!r} is not a folder; pass a continual run's output_dir.")
        d = _run_defaults(Path(run_dir), new_task)
    elif model is None or (data is None) or tokenizer is None:
        raise ConfigError("without RUN_DIR, pass all of --model DIR, --data DIR (a DatasetDict saved with "
                          "save_to_disk, with task{i}_train/test splits) and --tokenizer DIR.")
    for key, val in (("model", model), ("previous", previous), ("data", data), ("tokenizer", tokenizer)):
        if val is not None:
            d[key] = Path(val)
    if data is not None:
        d["data_files"] = None
    m = _checkpoint(d["model"], "the model", "--model")
    prev = _checkpoint(d["previous"], "the previous checkpoint", "--previous") if d.get("previous") else None
    return Inputs(model=m, previous=prev, data=d.get("data"), tokenizer=d["tokenizer"], old_task=old,
                  new_task=new_task, max_length=int(max_length or d.get("max_length", 64)),
                  training=d.get("training", {}), data_files=d.get("data_files"))


def load_splits(inp: Inputs, old_split: str):
    """(old-task eval rows, new-task train rows), raw. Raises ConfigError naming a missing split."""
    if inp.data_files is not None:
        dsd = load_data_files(inp.data_files)
    else:
        if inp.data is None or not (inp.data / "dataset_dict.json").is_file():
            raise ConfigError(f"--data {str(inp.data)!r} is not a DatasetDict folder (save_to_disk output with "
                              "a dataset_dict.json); pass the run's data-* folder.")
        dsd = load_from_disk(str(inp.data))
    if not isinstance(dsd, DatasetDict):
        raise ConfigError(f"--data {str(inp.data)!r} holds one Dataset, not a DatasetDict with task splits.")
    need = [f"task{inp.old_task}_{old_split}", f"task{inp.new_task}_train"]
    missing = [s for s in need if s not in dsd]
    if missing:
        raise ConfigError(f"the data has no split(s) {missing} (it has {sorted(dsd)}); pick --old-task/--new-task "
                          "among its tasks, or --old-split train|test.")
    return dsd[need[0]], dsd[need[1]]


def load_tokenizer(path: Path):
    """The run's tokenizer, with pad = EOS when it has no pad token (as the runner does)."""
    try:
        tok = AutoTokenizer.from_pretrained(str(path))
    except (OSError, ValueError) as e:
        raise ConfigError(f"--tokenizer {str(path)!r}: could not load a tokenizer ({type(e).__name__}); pass the "
                          "run's tokenizer-* folder or the model's tokenizer folder.") from None
    if tok.eos_token_id is None:
        raise ConfigError(f"tokenizer {str(path)!r} has no EOS token; the QA rows need one.")
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    return tok
