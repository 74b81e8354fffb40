"""The safety scenario at toy scale on CPU: align a tiny model, fine-tune it on an identity shift under SEQ and Freeze(k).

`run_safety_demo` teaches a tiny Llama-shaped model from scratch to refuse templated harmful-style
requests and answer benign ones (the "aligned" model, reused by every arm), then fine-tunes it on a
synthetic identity-shift set under SEQ and Freeze(k) with the safety evaluation of the runner
(`fastfreeze.lab.continual.safety_eval`) before and after. `fastfreeze safety demo` prints the table
(`fastfreeze.lab.continual.report.format_safety_table`).

Usage:
    results = run_safety_demo("runs/safety-demo", ks=(1, 2, 3))
    print(format_safety_table(results))
"""
from __future__ import annotations

import json
import os
import time
from pathlib import Path

from fastfreeze import _io
from fastfreeze.data import PaddingCollator, build_word_tokenizer, tokenize_qa
from fastfreeze.lab.safety.synthetic import IDENTITY_EVAL_WRAPPER, SAFETY_PROMPT_FORMAT, make_safety_data
from fastfreeze.lab.continual.build import QA_COLUMNS, build_model
from fastfreeze.lab.continual.config import ConfigError, ContinualConfig, ModelConfig, fingerprint
from fastfreeze.lab.continual.runner import run_continual
from fastfreeze.lab.continual.trainers import make_trainer, training_arguments

DEMO_MODEL = dict(hidden_size=128, num_hidden_layers=4, num_attention_heads=4, max_position_embeddings=128)
DEMO_ALIGN = dict(num_train_epochs=40, learning_rate=1.0e-3, per_device_train_batch_size=32,
                  lr_scheduler_type="cosine", warmup_steps=20, weight_decay=0.1)
DEMO_FINETUNE = dict(num_train_epochs=20, learning_rate=3.0e-4, per_device_train_batch_size=16,
                     lr_scheduler_type="constant")
DEMO_DATA = dict(n_harmful=240, n_benign=240, n_identity=100)
IDENTITY_TEST_FRACTION = 0.2


def _write_jsonl(path: Path, ds) -> None:
    """Write `ds` as JSONL unless the file already holds exactly that (keeps mtimes, so resumes stay valid)."""
    text = "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in ds)
    if path.is_file() and path.read_text(encoding="utf-8") == text:
        return
    _io.write_text(path, text)


def _demo_files(out: Path, seed: int, sizes: dict):
    """The synthetic safety splits (identity set split train/test) as JSONL files; returns (data, paths)."""
    data = make_safety_data(seed=seed, **sizes)
    ident = data["identity_train"].train_test_split(test_size=IDENTITY_TEST_FRACTION, seed=seed)
    (out / "data").mkdir(parents=True, exist_ok=True)
    paths = {}
    for name, ds in [("identity_train", ident["train"]), ("identity_test", ident["test"]),
                     ("harmful_eval", data["harmful_eval"]), ("benign_eval", data["benign_eval"])]:
        paths[name] = out / "data" / f"{name}.jsonl"
        _write_jsonl(paths[name], ds)
    return data, paths


def align_model(out: Path, data, seed: int, log=print, model: dict | None = None, align: dict | None = None) -> Path:
    """Train the tiny model from scratch on ``align_train`` (refuse harmful, answer benign); reused when present.

    Usage: ``aligned_dir = align_model(Path("runs/safety-demo"), make_safety_data(0), seed=0)``.
    The folder holds the model and its word tokenizer; `align.json` records what made it.
    `model` / `align` replace `DEMO_MODEL` / `DEMO_ALIGN` (shape, TrainingArguments); tests use tiny ones.
    """
    model_shape, align_args = model or DEMO_MODEL, align or DEMO_ALIGN
    target = out / "aligned"
    fp = fingerprint(model_shape, align_args, data["align_train"].to_dict(), seed, "align/v1")
    marker = target / "align.json"
    if marker.is_file() and json.loads(marker.read_text()).get("fingerprint") == fp:
        log(f"[safety demo] aligned model: reusing {target}")
        return target
    log("[safety demo] aligned model: training from scratch on align_train")
    t0 = time.time()
    tok = build_word_tokenizer(data)
    net = build_model(ModelConfig(family="llama", **model_shape), tok, seed)
    train = tokenize_qa(data["align_train"], tok, model_shape["max_position_embeddings"]).select_columns(list(QA_COLUMNS))
    args = training_arguments(str(out / "trainer" / "align"), seed, align_args)
    result = make_trainer(net, args, train, PaddingCollator(tok.pad_token_id)).train()

    def save(tmp: str) -> None:
        net.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        record = {"fingerprint": fp, "train_loss": result.training_loss, "steps": result.global_step,
                  "seconds": round(time.time() - t0, 1)}
        _io.write_json(Path(tmp) / "align.json", record, indent=2)

    _io.write_dir(save, target)
    log(f"[safety demo] aligned model: {result.global_step} steps in {time.time() - t0:.0f}s")
    return target


def _check_ks(ks, n_layers: int) -> list[int]:
    ks = list(ks)
    bad = [k for k in ks if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= n_layers]
    if bad or not ks or len(set(ks)) != len(ks):
        raise ConfigError(
            f"ks={ks}: give distinct layer counts in 1..{n_layers} (the demo model has {n_layers} decoder layers; "
            "Freeze always includes the embedding)."
        )
    return ks


def demo_config(out: Path, aligned: Path, paths: dict, ks, seed: int = 0, finetune: dict | None = None,
                model: dict | None = None) -> ContinualConfig:
    """The runner config of the demo: one task (identity shift), SEQ + Freeze(k) from Task 0, safety measured."""
    model = model or DEMO_MODEL
    ks = _check_ks(ks, model["num_hidden_layers"])
    cfg = ContinualConfig.from_dict({
        "output_dir": str(out / "run"),
        "seed": seed,
        "num_tasks": 1,
        "model": {"path": str(aligned)},
        "data": {"preset": None, "tokenizer": str(aligned), "max_length": model["max_position_embeddings"],
                 "files": {"task0_train": str(paths["identity_train"]), "task0_test": str(paths["identity_test"])}},
        "pretrain": {"enabled": False},
        "training": dict(finetune or DEMO_FINETUNE),
        "strategies": [{"name": "seq"}] + [{"name": "freeze", "num_frozen_layers": k, "from_task": 0} for k in ks],
        "evaluation": {"batch_size": 256},
        "recovery": {"enabled": False},
        "orthogonality": {"enabled": False},
        "safety": {
            "enabled": True,
            "harmful_prompts": str(paths["harmful_eval"]),
            "benign_prompts": str(paths["benign_eval"]),
            "benign_answer_column": "answer",
            "wrappers": {"plain": SAFETY_PROMPT_FORMAT, "AOA": IDENTITY_EVAL_WRAPPER},
            "benign_wrapper": SAFETY_PROMPT_FORMAT,
            "max_new_tokens": 24,
            "batch_size": 64,
            "use_chat_template": False,
        },
    })
    cfg.validate()
    return cfg


def run_safety_demo(output_dir: str | os.PathLike = "runs/safety-demo", ks=(1, 2, 3), epochs=(5, 20),
                    seed: int = 0, finetune: dict | None = None, log=print, *, model: dict | None = None,
                    align: dict | None = None, data_sizes: dict | None = None) -> dict[int, dict]:
    """Align a tiny model once, then fine-tune it on the identity shift under SEQ and Freeze(k), for each
    fine-tune length in `epochs`; returns {epochs: results of that run} (each run in ``run-ep<E>/``).

    `finetune` overrides the identity fine-tune's TrainingArguments (default `DEMO_FINETUNE`); `model`,
    `align`, `data_sizes` replace DEMO_MODEL, DEMO_ALIGN, DEMO_DATA (smaller ones make a smoke test).
    Reruns resume: the aligned model and finished stages are reused.
    Usage: ``runs = run_safety_demo("runs/safety-demo", ks=(1, 2, 3), epochs=(5, 20))``.
    """
    out = Path(output_dir)
    _check_ks(ks, (model or DEMO_MODEL)["num_hidden_layers"])  # before any training
    epochs = list(epochs)
    if not epochs or any(isinstance(e, bool) or not isinstance(e, int) or e < 1 for e in epochs):
        raise ConfigError(f"epochs={epochs}: give one or more positive ints (fine-tune lengths).")
    data, paths = _demo_files(out, seed, data_sizes or DEMO_DATA)
    aligned = align_model(out, data, seed, log=log, model=model, align=align)
    runs = {}
    for ep in epochs:
        ft = {**DEMO_FINETUNE, **(finetune or {}), "num_train_epochs": ep}
        cfg = demo_config(out, aligned, paths, ks, seed, ft, model)
        cfg.output_dir = str(out / f"run-ep{ep}")
        runs[ep] = run_continual(cfg, log=log)
    return runs


__all__ = ["align_model", "demo_config", "run_safety_demo"]
