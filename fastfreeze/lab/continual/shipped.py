"""Pretrained checkpoints shipped as package data, used by a run only when their recipe is exactly the run's.

The `tiny` demo's pretraining is over half of its time, and its result is fixed by the config, the data
and the seed, so the package carries the weights (`shipped_checkpoints/tiny/`, fp32 safetensors) with the
recipe they were trained from. A run with `pretrain.shipped: true` copies them instead of pretraining
only if its own recipe matches: the pretrain stage's fingerprint (model shape, data settings, seed,
tokenizer size, pretraining kwargs) plus sha256 of the tokenized biographies and of the freshly
initialized weights, so a change to the data generator, the tokenizer or the model's init also falls
back to pretraining. What the recipe cannot see (the Trainer's and torch's arithmetic) is checked by
regenerating the weights and comparing them: `python -m fastfreeze.lab.continual.cli_demo_checkpoint check`.
"""
from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import torch

SHIPPED_DIR = Path(__file__).parent / "shipped_checkpoints"
RECIPE_FILE = "recipe.json"
WEIGHT_FILES = ("config.json", "generation_config.json", "model.safetensors")
RECIPE_KEYS = ("fingerprint", "data_sha256", "init_sha256")


def dataset_sha256(ds) -> str:
    """sha256 of a tokenized dataset's columns, in order. Usage: `dataset_sha256(data.trainable(data.bios))`."""
    h = hashlib.sha256()
    for name in sorted(ds.column_names):
        h.update(name.encode())
        h.update(json.dumps(list(ds[name])).encode())
    return h.hexdigest()


def weights_sha256(model) -> str:
    """sha256 of a model's parameters and buffers (names, dtypes, shapes, bytes). Usage: `weights_sha256(model)`."""
    h = hashlib.sha256()
    for name, t in sorted(model.state_dict().items()):
        t = t.detach().cpu().contiguous()
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)}".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def recipe_of(fingerprint: str, fresh_model, bios) -> dict:
    """What a pretraining run's weights follow from. `fresh_model` is the model before any training step."""
    return {"fingerprint": fingerprint, "data_sha256": dataset_sha256(bios), "init_sha256": weights_sha256(fresh_model)}


def find_shipped(recipe: dict) -> Path | None:
    """The shipped checkpoint folder trained from exactly `recipe`, or None. Usage: `find_shipped(recipe_of(...))`."""
    for d in sorted(p for p in SHIPPED_DIR.glob("*") if (p / RECIPE_FILE).is_file()):
        stored = json.loads((d / RECIPE_FILE).read_text())["recipe"]
        if all(stored.get(k) == recipe.get(k) for k in RECIPE_KEYS):
            return d
    return None


def shipped_record(folder: Path) -> dict:
    """The pretrain stage's record of a shipped checkpoint: its training loss and steps, and where it came from."""
    meta = json.loads((folder / RECIPE_FILE).read_text())
    return {"train_loss": meta["train_loss"], "steps": meta["steps"], "shipped": folder.name}


def copy_weights(folder: Path, dest: str) -> None:
    """Copy a checkpoint's weight files into `dest` (an `_io.write_dir` save function's argument)."""
    Path(dest).mkdir(parents=True, exist_ok=True)
    for name in WEIGHT_FILES:
        if (folder / name).is_file():
            shutil.copy2(folder / name, Path(dest) / name)
