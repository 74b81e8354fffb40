"""Inputs of `fastfreeze verify`: offline model and data loading, tokenized rows (text, prompt/completion, blocks).

Usage:
    model, tok = load_model_and_tokenizer("path/to/model", dtype="fp32")
    rows = load_rows("data.jsonl", tok, max_length=256, limit=32)   # input_ids / attention_mask / labels
    collate = PaddingCollator(pad_token_id(tok), labels_from_input_ids=True)
"""
from __future__ import annotations

import itertools
import math
import os

import datasets
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from ..data.biography import BiographyConfig, make_biography
from ..data.collate import IGNORE_INDEX
from .report import VerifyError

TORCH_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
_FILE_BUILDERS = {".json": "json", ".jsonl": "json", ".csv": "csv", ".parquet": "parquet"}
_FILE_TYPES = ".txt (one example per line), .json, .jsonl, .csv or .parquet"


def weight_dtype(dtype: str) -> torch.dtype:
    """The dtype the weights are loaded in: bf16 trains bf16 weights (bf16 autocast on top), as people
    fine-tune today; fp16 keeps fp32 master weights under fp16 autocast, since the loss scaler
    refuses fp16 gradients."""
    return torch.bfloat16 if dtype == "bf16" else torch.float32


def load_model_and_tokenizer(path: str, dtype: str = "fp32"):
    """Load a causal LM and its tokenizer without the network (a local dir or the HF cache).

    The tokenizer is None when the directory has none (fine for pre-tokenized data).

    Usage: model, tok = load_model_and_tokenizer("runs/my-model", "bf16")
    """
    if not os.path.exists(path) and (path.startswith((".", "/", "~")) or path.count("/") > 1):
        raise VerifyError(f"--model {path!r} does not exist; pass a local model directory (one written by "
                          "save_pretrained, with config.json) or a Hub name already in your Hugging Face cache.")
    if os.path.isdir(path) and not os.path.exists(os.path.join(path, "config.json")):
        raise VerifyError(f"--model {path!r} has no config.json; pass the directory written by "
                          "model.save_pretrained(...).")
    try:
        model = AutoModelForCausalLM.from_pretrained(path, local_files_only=True, dtype=weight_dtype(dtype))
    except OSError as e:
        raise VerifyError(f"cannot load model {path!r} offline ({e}). Download it first "
                          f"(`huggingface-cli download {path}`) or pass a local directory.") from e
    try:
        tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
    except (OSError, ValueError, TypeError):
        tokenizer = None
    return model, tokenizer


def pad_token_id(tokenizer) -> int:
    """The id used to pad input_ids: the tokenizer's pad token, else its EOS, else 0 (masked out anyway)."""
    if tokenizer is None:
        return 0
    for tid in (tokenizer.pad_token_id, tokenizer.eos_token_id):
        if tid is not None:
            return int(tid)
    return 0


def rows_needed(steps: int, batch_size: int, grad_accum: int, cache: bool) -> int:
    """How many rows `verify` trains on. With a cache, half as many as the steps consume, so the
    second half of the run is a second epoch whose rows are served by the cache."""
    per_step = batch_size * grad_accum
    return per_step * (math.ceil(steps / 2) if cache else steps)


def _open(path: str, split: str, limit: int | None = None) -> datasets.Dataset:
    if not os.path.exists(path):
        raise VerifyError(f"--data {path!r} does not exist; pass a directory saved with Dataset.save_to_disk, "
                          f"or a {_FILE_TYPES} file.")
    if os.path.isdir(path):
        try:
            data = datasets.load_from_disk(path)
        except FileNotFoundError as e:
            raise VerifyError(f"--data {path!r} is a directory but not one written by save_to_disk ({e}); "
                              f"pass such a directory or a {_FILE_TYPES} file.") from e
        if isinstance(data, datasets.DatasetDict):
            if split in data:
                return data[split]
            if len(data) == 1:
                return next(iter(data.values()))
            raise VerifyError(f"--data {path!r} has splits {list(data)}, none named {split!r}; pass --split NAME.")
        return data
    if _is_txt(path):
        lines = itertools.islice(_txt_lines(path, keep_linebreaks=False), limit)
        return datasets.Dataset.from_dict({"text": list(lines)}, features=datasets.Features({"text": datasets.Value("string")}))
    builder = _FILE_BUILDERS.get(os.path.splitext(path)[1].lower())
    if builder is None:
        raise VerifyError(f"--data {path!r}: unknown file type; use {_FILE_TYPES}, "
                          "or a directory saved with Dataset.save_to_disk.")
    return datasets.load_dataset(builder, data_files=path, split="train")


def _is_txt(path: str | None) -> bool:
    return path is not None and os.path.isfile(path) and os.path.splitext(path)[1].lower() == ".txt"


def _txt_lines(path: str, keep_linebreaks: bool):
    """The lines of a UTF-8 text file, lazily. Per-line examples skip blank lines; for block grouping
    every line is kept with its line break (as run_clm's `keep_linebreaks=True` default does)."""
    try:
        with open(path, encoding="utf-8") as f:
            for line in f:
                if keep_linebreaks:
                    yield line
                elif line.strip():
                    yield line.rstrip("\r\n")
    except UnicodeDecodeError as e:
        raise VerifyError(f"--data {path!r} is not UTF-8 text ({e}).") from e


def load_rows(path: str | None, tokenizer, max_length: int = 256, limit: int | None = None, split: str = "train",
              text_column: str | None = None, prompt_column: str | None = None,
              completion_column: str | None = None, block_size: int | None = None) -> datasets.Dataset:
    """Load (the first `limit` rows of) a local dataset as input_ids / attention_mask / labels.

    Pre-tokenized data (an ``input_ids`` column, optional ``labels``) is used as is, cut to
    `max_length`. Text data: a text column (loss on every token), or prompt + completion columns
    (loss on the completion + EOS only). Columns are auto-detected ("text", or "prompt" and
    "completion") unless named. A .txt file is a text column with one example per non-blank line.
    `path=None` uses a small built-in English corpus (Biography bios).

    With `block_size=N` the text is instead tokenized, concatenated and cut into rows of exactly N
    tokens (loss on every token), as HF's run_clm.py trains (`max_length` does not apply then).

    Usage: rows = load_rows("train.jsonl", tok, prompt_column="question", completion_column="answer")
           rows = load_rows("corpus.txt", tok, block_size=128, limit=16)
    """
    if block_size is not None:
        return _load_blocks(path, tokenizer, block_size, limit, split, text_column, prompt_column, completion_column)
    data = _default_corpus(limit or 64) if path is None else _open(path, split, limit)
    if limit is not None:
        data = data.select(range(min(limit, len(data))))
    if len(data) == 0:
        raise VerifyError(f"--data {path!r} has no rows.")
    cols = data.column_names
    for flag, name in (("--text-column", text_column), ("--prompt-column", prompt_column),
                       ("--completion-column", completion_column)):
        if name is not None and name not in cols:
            raise VerifyError(f"{flag} {name!r} is not a column of {path!r}; its columns are {cols}.")
    if text_column is None and prompt_column is None and completion_column is None and "input_ids" in cols:
        return _pretokenized(data, max_length)
    if tokenizer is None:
        raise VerifyError("the model directory has no tokenizer; save one next to the model "
                          "(tokenizer.save_pretrained(dir)) or pass pre-tokenized data with an input_ids column.")
    if prompt_column or completion_column or (text_column is None and "text" not in cols):
        prompt_column, completion_column = prompt_column or "prompt", completion_column or "completion"
        missing = [c for c in (prompt_column, completion_column) if c not in cols]
        if missing:
            raise VerifyError(f"{path!r} has no text column and lacks {missing}; its columns are {cols}. "
                              "Name yours with --text-column, or --prompt-column and --completion-column.")
        return _tokenize_pairs(data, tokenizer, prompt_column, completion_column, max_length)
    return _tokenize_text(data, tokenizer, text_column or "text", max_length)


def _load_blocks(path, tokenizer, block_size, limit, split, text_column, prompt_column, completion_column):
    if isinstance(block_size, bool) or not isinstance(block_size, int) or block_size < 2:
        raise VerifyError(f"--block-size {block_size!r} must be an int >= 2 (a row needs a next token to predict).")
    if prompt_column or completion_column:
        raise VerifyError("--block-size concatenates plain text into fixed-size blocks; it does not apply to "
                          "prompt/completion rows. Drop --block-size, or pass a text file or --text-column.")
    if tokenizer is None:
        raise VerifyError("--block-size needs a tokenizer: save one next to the model (tokenizer.save_pretrained(dir)).")
    if _is_txt(path):
        if text_column not in (None, "text"):
            raise VerifyError(f"--text-column {text_column!r}: a .txt file has one column, 'text'.")
        texts = _txt_lines(path, keep_linebreaks=True)
    else:
        data = _default_corpus(max(64, limit or 64)) if path is None else _open(path, split)
        column = text_column or "text"
        if column not in data.column_names:
            raise VerifyError(f"--block-size needs a text column: {path!r} has no column {column!r} (its columns are "
                              f"{data.column_names}); name one with --text-column.")
        texts = (str(t) for batch in data.iter(batch_size=1000) for t in batch[column])
    blocks, total = group_texts(texts, tokenizer, block_size, limit)
    if not blocks:
        raise VerifyError(f"--data {path!r} has {total} tokens, fewer than one block of --block-size {block_size}; "
                          "pass more text or a smaller --block-size.")
    return _rows(blocks, blocks)


def group_texts(texts, tokenizer, block_size: int, limit: int | None = None, batch: int = 1000):
    """Tokenize `texts` (each with the tokenizer's special tokens, as run_clm.py does), concatenate them
    and cut the stream into blocks of `block_size` tokens, dropping the incomplete last block. Stops
    reading once `limit` blocks are full. Returns (blocks, tokens read).

    Unlike run_clm.py, which groups each `map` batch of 1000 examples separately (dropping a remainder
    per batch), the whole stream is grouped, so no tokens are lost between batches.

    Usage: blocks, n = group_texts(["a b c", "d e"], tok, block_size=4)
    """
    stream: list[int] = []
    blocks: list[list[int]] = []
    total = 0
    pending: list[str] = []

    def consume(chunk):
        nonlocal total
        for ids in tokenizer(chunk)["input_ids"]:
            stream.extend(ids)
            total += len(ids)
        while len(stream) >= block_size and (limit is None or len(blocks) < limit):
            blocks.append(stream[:block_size])
            del stream[:block_size]

    for text in texts:
        pending.append(text)
        if len(pending) == batch:
            consume(pending)
            pending = []
            if limit is not None and len(blocks) >= limit:
                return blocks, total
    if pending:
        consume(pending)
    return blocks, total


def _rows(ids_list, labels_list) -> datasets.Dataset:
    kept = [(i, l) for i, l in zip(ids_list, labels_list) if any(x != IGNORE_INDEX for x in l[1:])]
    if not kept:
        raise VerifyError("no row has a token to train on (rows too short, or prompts fill max_length); "
                          "pass longer rows or a larger --max-length.")
    return datasets.Dataset.from_dict({"input_ids": [k[0] for k in kept], "labels": [k[1] for k in kept],
                                       "attention_mask": [[1] * len(k[0]) for k in kept]})


def _pretokenized(data: datasets.Dataset, max_length: int) -> datasets.Dataset:
    ids = [list(r)[:max_length] for r in data["input_ids"]]
    labels = ([list(r)[:max_length] for r in data["labels"]] if "labels" in data.column_names else ids)
    return _rows(ids, labels)


def _tokenize_text(data, tokenizer, column: str, max_length: int) -> datasets.Dataset:
    enc = tokenizer([str(t) for t in data[column]], truncation=True, max_length=max_length)["input_ids"]
    return _rows(enc, enc)


def _tokenize_pairs(data, tokenizer, prompt_col: str, completion_col: str, max_length: int) -> datasets.Dataset:
    prompts = tokenizer([str(t) for t in data[prompt_col]])["input_ids"]
    completions = tokenizer([str(t) for t in data[completion_col]], add_special_tokens=False)["input_ids"]
    eos = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
    ids, labels = [], []
    for p, c in zip(prompts, completions):
        row = (list(p) + list(c) + eos)[:max_length]
        ids.append(row)
        labels.append(([IGNORE_INDEX] * len(p) + list(c) + eos)[:max_length])
    return _rows(ids, labels)


def _default_corpus(n: int) -> datasets.Dataset:
    """Synthetic English biographies (fastfreeze's Biography benchmark): no download needed."""
    people = max(1, math.ceil(n / 2))
    cfg = BiographyConfig(num_people_task0_train=people, num_people_task0_test=1, num_tasks=0, bios_per_person=2)
    return make_biography(cfg)["bios"].select_columns(["text"])


def as_dataset(dataset):
    """Rows with input_ids (+ attention_mask, labels) as a Dataset with only those columns."""
    if isinstance(dataset, list):
        dataset = datasets.Dataset.from_list(dataset)
    if not isinstance(dataset, datasets.Dataset) or "input_ids" not in dataset.column_names:
        raise VerifyError("dataset must be a datasets.Dataset (or list of dicts) with an input_ids column "
                          "(labels optional); tokenize text first, e.g. with fastfreeze.verify.load_rows.")
    keep = [c for c in ("input_ids", "attention_mask", "labels") if c in dataset.column_names]
    return dataset.select_columns(keep)
