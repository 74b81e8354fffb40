"""Builds what a run needs from its config: the task data, the tokenizer, tokenized splits and the model."""
from __future__ import annotations

from pathlib import Path

import datasets
import torch
import transformers
from datasets import load_from_disk
from transformers import AutoTokenizer

from fastfreeze import _io
from fastfreeze.data import BiographyConfig, PaddingCollator, build_word_tokenizer, make_biography, tokenize_bios, tokenize_qa
from fastfreeze.lab.continual.config import ConfigError, ContinualConfig, DataConfig, ModelConfig, fingerprint

QA_COLUMNS = ("input_ids", "attention_mask", "labels")


def required_splits(num_tasks: int, pretrain: bool) -> list[str]:
    names = ["bios"] if pretrain else []
    for i in range(num_tasks):
        names += [f"task{i}_train", f"task{i}_test"]
    return names


def load_task_data(cfg: DataConfig, num_tasks: int, pretrain: bool, seed: int, cache_dir: Path):
    """The run's DatasetDict: `cfg.path`, else the cached copy in `cache_dir`, else generated from the preset."""
    if cfg.files is not None:
        dsd = load_data_files(cfg.files)
    elif cfg.path is not None:
        dsd = load_from_disk(cfg.path)
    elif cache_dir.is_dir():
        dsd = load_from_disk(str(cache_dir))
    else:
        overrides = dict(cfg.overrides)
        overrides.setdefault("seed", seed)
        try:
            bio = BiographyConfig.preset(cfg.preset, **overrides)
        except (TypeError, ValueError) as e:
            raise ConfigError(f"data: {e}") from None
        dsd = make_biography(bio)
        _io.write_dir(dsd.save_to_disk, cache_dir)
    missing = [s for s in required_splits(num_tasks, pretrain) if s not in dsd]
    if missing:
        raise ConfigError(
            f"task data is missing split(s) {missing} (num_tasks={num_tasks}); the data has {sorted(dsd)}. "
            "Lower num_tasks, or generate more tasks (data.overrides, e.g. num_tasks in BiographyConfig)."
        )
    return dsd


def load_data_files(files: dict):
    """A DatasetDict from local files, one split per entry: `load_data_files({"task0_train": "a.jsonl", ...})`.

    Each file needs `prompt` and `answer` columns (the answer gets the loss; start it with a space).
    """
    fmt = {".csv": "csv", ".json": "json", ".jsonl": "json"}
    out = {}
    for split, f in files.items():
        try:
            ds = datasets.load_dataset(fmt[Path(f).suffix.lower()], data_files=str(f), split="train")
        except Exception as e:  # datasets raises many types; name the file
            raise ConfigError(f"data.files.{split}: could not read {f!r}: {type(e).__name__}: {e}") from None
        missing = [c for c in ("prompt", "answer") if c not in ds.column_names]
        if missing or len(ds) == 0:
            raise ConfigError(
                f"data.files.{split}={f!r} needs rows with 'prompt' and 'answer' columns; it has "
                f"{ds.column_names} and {len(ds)} rows."
            )
        out[split] = ds
    return datasets.DatasetDict(out)


def load_tokenizer(cfg: DataConfig, dsd, cache_dir: Path):
    """The word-level tokenizer built from the data (saved once, reloaded on resume) or a local tokenizer."""
    if cfg.tokenizer != "word":
        tok = AutoTokenizer.from_pretrained(cfg.tokenizer)
    elif cache_dir.is_dir():
        tok = AutoTokenizer.from_pretrained(str(cache_dir))
    else:
        tok = build_word_tokenizer(dsd)
        _io.write_dir(tok.save_pretrained, cache_dir)
    if tok.eos_token_id is None:
        raise ConfigError(f"tokenizer {cfg.tokenizer!r} has no EOS token; exact match needs one.")
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    return tok


class TaskData:
    """Tokenized splits of a run. Usage: `td = TaskData(dsd, tok, cfg.data, num_tasks)`; `td.train[i]`, `td.test[i]`."""

    def __init__(self, dsd, tokenizer, cfg: DataConfig, num_tasks: int, pretrain: bool):
        self.raw = dsd
        self.tokenizer = tokenizer
        self.train = [tokenize_qa(dsd[f"task{i}_train"], tokenizer, cfg.max_length) for i in range(num_tasks)]
        self.test = [tokenize_qa(dsd[f"task{i}_test"], tokenizer, cfg.max_length) for i in range(num_tasks)]
        self.bios = tokenize_bios(dsd["bios"], tokenizer, cfg.bios_max_length) if pretrain else None
        self.collator = PaddingCollator(tokenizer.pad_token_id)

    @staticmethod
    def trainable(ds):
        """Only the columns the model takes (the collator pads them)."""
        keep = [c for c in ds.column_names if c in QA_COLUMNS]
        return ds.select_columns(keep)

    def train_set(self, t: int, replay_fraction: float = 0.0, seed: int = 0):
        """Task t's training rows, plus `replay_fraction` of every earlier task's (a fixed shuffle per task)."""
        ds = self.trainable(self.train[t])
        if replay_fraction <= 0 or t < 1:
            return ds
        parts = [ds]
        for j in range(t):
            old = self.trainable(self.train[j]).shuffle(seed=seed + j)
            parts.append(old.select(range(max(1, round(replay_fraction * len(old))))))
        return datasets.concatenate_datasets(parts)


def build_model(cfg: ModelConfig, tokenizer, seed: int):
    """A fresh model from `cfg` (llama | gpt_neox shapes, untied head) sized to `tokenizer`, or `cfg.path` loaded."""
    if cfg.path is not None:
        return transformers.AutoModelForCausalLM.from_pretrained(cfg.path)
    ids = dict(
        vocab_size=len(tokenizer),
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        bos_token_id=tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id,
        tie_word_embeddings=False,  # the paper's recipe freezes the embedding but trains the head
        max_position_embeddings=cfg.max_position_embeddings,
        hidden_size=cfg.hidden_size,
        num_hidden_layers=cfg.num_hidden_layers,
        num_attention_heads=cfg.num_attention_heads,
    )
    if cfg.family == "llama":
        mc = transformers.LlamaConfig(
            intermediate_size=cfg.intermediate_size or (8 * cfg.hidden_size) // 3,
            num_key_value_heads=cfg.num_attention_heads,
            **ids,
        )
    else:
        mc = transformers.GPTNeoXConfig(
            intermediate_size=cfg.intermediate_size or 4 * cfg.hidden_size,
            rotary_pct=0.25,
            hidden_dropout=0.0,
            attention_dropout=0.0,
            **ids,
        )
    torch.manual_seed(seed)
    return transformers.AutoModelForCausalLM.from_config(mc)


def num_layers_of(model) -> int:
    return int(model.config.num_hidden_layers)


def source_stats(cfg: ContinualConfig) -> list:
    """(path, size, mtime) of the run's input files (data.files, model.path): a changed input invalidates the
    finished stages on resume. Empty for generated data and a from-scratch model (fingerprints unchanged)."""
    files = [Path(f) for f in (cfg.data.files or {}).values()]
    if cfg.model.path is not None and Path(cfg.model.path).is_dir():
        files += sorted(p for p in Path(cfg.model.path).iterdir() if p.is_file())
    return [(str(f), f.stat().st_size, f.stat().st_mtime_ns) for f in files]


def prepare(cfg: ContinualConfig):
    """Data, tokenizer and tokenized splits for `cfg`, cached under its output_dir."""
    out = Path(cfg.output_dir)
    pretrain = cfg.pretrain.enabled
    # Cache folders are named by what made them, so a changed data section never reuses stale data.
    stats = source_stats(cfg)
    tag = fingerprint(cfg.data, cfg.seed, *stats)
    dsd = load_task_data(cfg.data, cfg.num_tasks, pretrain, cfg.seed, out / f"data-{tag}")
    tok = load_tokenizer(cfg.data, dsd, out / f"tokenizer-{tag}")
    return TaskData(dsd, tok, cfg.data, cfg.num_tasks, pretrain)
