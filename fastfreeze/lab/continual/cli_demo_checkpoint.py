"""`python -m fastfreeze.lab.continual.cli_demo_checkpoint regenerate|check`: rebuild the demo's shipped pretrained checkpoint.

`regenerate` pretrains the `tiny` preset from scratch (~10 CPU-minutes on one thread) and
writes the weights and their recipe into fastfreeze/lab/continual/shipped_checkpoints/tiny/. `check` pretrains
the same way into a scratch folder and compares with the shipped files: the same recipe and bitwise equal
tensors, exit 0; anything else, exit 1 with what differs. `--work DIR` keeps the pretraining run (a rerun
with the same DIR reuses it). CI runs the cheap half (tests/lab/continual/test_shipped.py: the recipe).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

PRESET = "tiny"


def _pretrained(work: str):
    """(runner, recipe, record, checkpoint folder) of the preset's pretraining from scratch in `work`."""
    from fastfreeze.lab.continual.presets import load_preset
    from fastfreeze.lab.continual.runner import Runner

    cfg = load_preset(PRESET, output_dir=work)
    cfg.pretrain.shipped = False
    runner = Runner(cfg)
    fp, record = runner.pretrain()
    return runner, runner.pretrain_recipe(fp), record, runner.out / "checkpoints" / "pretrain"


def regenerate(work: str) -> Path:
    """Pretrain in `work` and write the result over the shipped checkpoint. Returns its folder."""
    import torch
    import transformers

    from fastfreeze import _io
    from fastfreeze.lab.continual import shipped

    _, recipe, record, ckpt = _pretrained(work)
    meta = {"recipe": recipe, "train_loss": record["train_loss"], "steps": record["steps"],
            "made": {"command": "python -m fastfreeze.lab.continual.cli_demo_checkpoint regenerate", "preset": PRESET,
                     "date": time.strftime("%Y-%m-%d"), "machine": f"{platform.machine()} {os.cpu_count()} CPUs",
                     "threads": torch.get_num_threads(), "torch": torch.__version__,
                     "transformers": transformers.__version__}}

    def save(d: str) -> None:
        shipped.copy_weights(ckpt, d)
        Path(d, shipped.RECIPE_FILE).write_text(json.dumps(meta, indent=2) + "\n")

    return _io.write_dir(save, shipped.SHIPPED_DIR / PRESET)


def check(work: str) -> list[str]:
    """Pretrain in `work` and compare with the shipped checkpoint: the differences (empty: identical)."""
    from safetensors.torch import load_file

    from fastfreeze.lab.continual import shipped

    _, recipe, _, ckpt = _pretrained(work)
    folder = shipped.SHIPPED_DIR / PRESET
    stored = json.loads((folder / shipped.RECIPE_FILE).read_text())["recipe"]
    problems = [f"recipe {k}: shipped {stored.get(k)} != regenerated {recipe[k]}"
                for k in shipped.RECIPE_KEYS if stored.get(k) != recipe[k]]
    ours, theirs = load_file(str(folder / "model.safetensors")), load_file(str(ckpt / "model.safetensors"))
    if set(ours) != set(theirs):
        problems.append(f"tensor names differ: {sorted(set(ours) ^ set(theirs))}")
    for name in sorted(set(ours) & set(theirs)):
        a, b = ours[name], theirs[name]
        if a.shape != b.shape or a.dtype != b.dtype or not bool((a == b).all()):
            diff = (a.float() - b.float()).abs().max().item() if a.shape == b.shape else "shape"
            problems.append(f"{name}: differs (max abs diff {diff})")
    return problems


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m fastfreeze.lab.continual.cli_demo_checkpoint", description=__doc__.splitlines()[0])
    p.add_argument("action", choices=("regenerate", "check"))
    p.add_argument("--work", default=None, help="folder for the pretraining run (default: a temporary one)")
    p.add_argument("--threads", type=int, default=None,
                   help="torch intra-op threads (default: torch's choice, as the demo); 1 on a busy shared machine")
    a = p.parse_args(argv)
    if a.threads is not None:
        import torch

        torch.set_num_threads(max(1, a.threads))
    with tempfile.TemporaryDirectory() as tmp:
        work = a.work or tmp
        if a.action == "regenerate":
            print(f"wrote {regenerate(work)}")
            return 0
        problems = check(work)
    print("\n".join(problems) if problems else f"the shipped {PRESET} checkpoint equals a fresh pretraining, bitwise")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
