"""Tokenization shared by QA and pretraining: a word-level tokenizer and the QA / biography tokenizers.

Usage::

    from fastfreeze.data import make_biography, BiographyConfig, build_word_tokenizer, tokenize_qa
    dd = make_biography(BiographyConfig.preset("quick"))
    tok = build_word_tokenizer(dd)
    train = tokenize_qa(dd["task0_train"], tok)   # batch it with fastfreeze.data.PaddingCollator
"""

from __future__ import annotations

import hashlib
from typing import Any, Iterable, Iterator, Sequence

import datasets
from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
from transformers import PreTrainedTokenizerBase, PreTrainedTokenizerFast

from .._hf_compat import dataset_fingerprint
from .collate import IGNORE_INDEX

__all__ = [
    "IGNORE_INDEX",
    "PAD_TOKEN",
    "UNK_TOKEN",
    "EOS_TOKEN",
    "build_word_tokenizer",
    "tokenize_bios",
    "tokenize_qa",
]

PAD_TOKEN, UNK_TOKEN, EOS_TOKEN = "<pad>", "<unk>", "<eos>"
_SPACE = "\u2581"  # "▁" marks a word that followed a space, as in SentencePiece
_TEXT_COLUMNS = ("text", "prompt", "answer")


def _pre_tokenizer() -> pre_tokenizers.PreTokenizer:
    # Split on spaces, keeping each space as a "▁" prefix of the next word, then isolate every
    # punctuation mark. Keeping the space makes decoding exact ("May 28, 1952" -> "▁May", "▁28",
    # ",", "▁1952" -> "May 28, 1952"), and prepend_scheme="always" gives a text-initial word the same
    # "▁" form as a word after a space, so a name is the same three tokens at the start of a bio and
    # inside a question.
    return pre_tokenizers.Sequence(
        [
            pre_tokenizers.Metaspace(replacement=_SPACE, prepend_scheme="always", split=True),
            pre_tokenizers.Split(Regex(rf"[^\w{_SPACE}]"), behavior="isolated"),
        ]
    )


def _texts(data: datasets.Dataset | datasets.DatasetDict, batch: int = 10_000) -> Iterator[list[str]]:
    parts = data.values() if isinstance(data, datasets.DatasetDict) else [data]
    for ds in parts:
        for col in _TEXT_COLUMNS:
            if col in ds.column_names:
                for start in range(0, len(ds), batch):
                    yield ds[start : start + batch][col]


def build_word_tokenizer(
    data: datasets.Dataset | datasets.DatasetDict, extra_texts: Iterable[str] = ()
) -> PreTrainedTokenizerFast:
    """A word-level ``PreTrainedTokenizerFast`` whose vocabulary covers every word of ``data``.

    Words are split on spaces and punctuation (a full name is 3 tokens, "May 28, 1952" is
    "▁May", "▁28", ",", "▁1952"); special tokens ``<pad>``, ``<unk>``, ``<eos>`` (ids 0, 1, 2), no BOS,
    nothing added automatically (append EOS yourself, as tokenize_qa/tokenize_bios do). Decoding is
    exact: ``decode(encode(s)) == s`` for text made of known words. Vocabulary ids are sorted by
    word, so the same data always gives the same ids (whatever the row order). Reads the ``text``,
    ``prompt`` and ``answer`` columns of every split, plus ``extra_texts``.

    Usage: ``tok = build_word_tokenizer(make_biography(BiographyConfig.preset("tiny")))``.
    """
    if not isinstance(data, (datasets.Dataset, datasets.DatasetDict)):
        raise TypeError(
            f"build_word_tokenizer expects a datasets.Dataset or DatasetDict, got {type(data).__name__}; "
            "pass the output of make_biography(...)"
        )
    # The pre-tokenizer never merges across a space and gives a text-initial chunk the same "▁"
    # prefix as one after a space, so the words of a text are the words of its space-separated
    # chunks: pre-tokenizing the few thousand distinct chunks instead of millions of texts makes
    # the paper preset ~15x faster. A lone "▁" (from double spaces) is always in the vocabulary.
    chunks: set[str] = set()
    for batch in _texts(data):
        for text in batch:
            chunks.update(text.split(" "))
    for text in extra_texts:
        chunks.update(text.split(" "))
    chunks.discard("")
    pre = _pre_tokenizer()
    words = sorted({w for c in chunks for w, _ in pre.pre_tokenize_str(c)} | {_SPACE})
    if words == [_SPACE]:
        raise ValueError("build_word_tokenizer found no text: data needs a 'text', 'prompt' or 'answer' column")
    specials = [PAD_TOKEN, UNK_TOKEN, EOS_TOKEN]
    vocab = {w: i for i, w in enumerate(specials + [w for w in words if w not in specials])}

    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token=UNK_TOKEN))
    tok.pre_tokenizer = _pre_tokenizer()
    tok.decoder = decoders.Metaspace(replacement=_SPACE, prepend_scheme="always", split=True)
    tok.add_special_tokens(specials)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        pad_token=PAD_TOKEN,
        unk_token=UNK_TOKEN,
        eos_token=EOS_TOKEN,
        padding_side="right",
        # transformers' cleanup would rewrite spaces around punctuation; our decoder is exact.
        clean_up_tokenization_spaces=False,
    )


def _eos_id(tokenizer: PreTrainedTokenizerBase) -> int:
    eos = tokenizer.eos_token_id
    if eos is None:
        raise ValueError(
            f"{type(tokenizer).__name__} has no eos_token; set one (e.g. tokenizer.eos_token = '<|endoftext|>') "
            "before tokenizing: answers and bios end with EOS"
        )
    return int(eos)


def _fingerprint(dataset: datasets.Dataset, tokenizer: PreTrainedTokenizerBase, *parts: Any) -> str:
    # An explicit fingerprint spares datasets from pickling/hashing the tokenizer (slow, and it warns
    # when that fails); the backend's JSON identifies the tokenizer exactly.
    h = hashlib.sha256()
    h.update(dataset_fingerprint(dataset).encode())
    backend = getattr(tokenizer, "backend_tokenizer", None)
    h.update(backend.to_str().encode() if backend is not None else repr(tokenizer).encode())
    h.update(repr((tokenizer.eos_token_id, parts)).encode())
    return h.hexdigest()[:32]


def _require_columns(dataset: datasets.Dataset, columns: Sequence[str], fn: str) -> None:
    if not isinstance(dataset, datasets.Dataset):
        raise TypeError(
            f"{fn} expects a datasets.Dataset (one split, e.g. dd['task0_train']), got {type(dataset).__name__}"
        )
    missing = [c for c in columns if c not in dataset.column_names]
    if missing:
        raise ValueError(
            f"{fn}: dataset lacks column(s) {missing} (has {dataset.column_names}); "
            "pass a split made by make_biography"
        )


def _check_inputs(dataset, tokenizer, columns: Sequence[str], max_length, fn: str) -> int:
    """Validate a tokenize_* call; returns the EOS id every row ends with."""
    _require_columns(dataset, columns, fn)
    if isinstance(max_length, bool) or not isinstance(max_length, int) or max_length < 2:
        raise ValueError(f"{fn}: max_length must be an int >= 2, got {max_length!r}")
    return _eos_id(tokenizer)


def _add_row(out: dict[str, list], ids: list[int], labels: list[int], max_length: int, too_long) -> None:
    """Append one tokenized row (all of it attended), or raise `too_long()`: a cut row would lose its answer."""
    if len(ids) > max_length:
        raise ValueError(too_long())
    out["input_ids"].append(ids)
    out["attention_mask"].append([1] * len(ids))
    out["labels"].append(labels)


def _map(dataset, tokenizer, encode, fn: str, max_length: int, num_proc: int | None, desc: str) -> datasets.Dataset:
    """`Dataset.map(encode)` in batches, with a fingerprint that names the tokenizer and the settings."""
    return dataset.map(
        encode,
        batched=True,
        new_fingerprint=_fingerprint(dataset, tokenizer, f"{fn}/v1", max_length),
        num_proc=num_proc,
        desc=desc,
    )


def tokenize_qa(
    dataset: datasets.Dataset,
    tokenizer: PreTrainedTokenizerBase,
    max_length: int = 64,
    num_proc: int | None = None,
) -> datasets.Dataset:
    """Tokenize QA rows: input_ids = prompt + answer + EOS, labels = -100 on the prompt, ids after.

    The prompt and the answer are tokenized separately (no special tokens) and concatenated, so the
    supervised tokens are exactly ``tokenizer(answer)`` + EOS. For the word tokenizer this equals
    tokenizing prompt + answer at once. For BPE tokenizers (e.g. GPT-NeoX) the answer's leading space
    makes its first token the usual "space + word" token, as the paper's code checks; separate
    tokenization guarantees the prompt/answer boundary is a token boundary. Adds ``input_ids``,
    ``attention_mask``, ``labels`` and ``prompt_len`` (number of prompt tokens) and keeps the original
    columns. A row longer than ``max_length`` raises (truncation would cut the answer).
    ``num_proc`` is passed to ``Dataset.map`` (worth it for the paper preset's 300K rows).

    Usage: ``train = tokenize_qa(dd["task0_train"], tok, max_length=64)``.
    """
    eos = _check_inputs(dataset, tokenizer, ["prompt", "answer"], max_length, "tokenize_qa")

    def encode(batch: dict[str, list]) -> dict[str, list]:
        prompts = tokenizer(batch["prompt"], add_special_tokens=False)["input_ids"]
        answers = tokenizer(batch["answer"], add_special_tokens=False)["input_ids"]
        out: dict[str, list] = {"input_ids": [], "attention_mask": [], "labels": [], "prompt_len": []}
        for i, (p, a) in enumerate(zip(prompts, answers)):
            if not a:
                raise ValueError(
                    f"tokenize_qa: answer {batch['answer'][i]!r} tokenizes to nothing; every answer needs text"
                )
            ids = list(p) + list(a) + [eos]
            _add_row(out, ids, [IGNORE_INDEX] * len(p) + list(a) + [eos], max_length, lambda: (
                f"tokenize_qa: row {batch['prompt'][i]!r} -> {batch['answer'][i]!r} needs {len(ids)} tokens "
                f"(prompt {len(p)} + answer {len(a)} + EOS) but max_length={max_length}; pass a larger max_length"))
            out["prompt_len"].append(len(p))
        return out

    return _map(dataset, tokenizer, encode, "tokenize_qa", max_length, num_proc, "tokenize QA")


def tokenize_bios(
    dataset: datasets.Dataset,
    tokenizer: PreTrainedTokenizerBase,
    max_length: int = 512,
    num_proc: int | None = None,
) -> datasets.Dataset:
    """Tokenize pretraining text: input_ids = text + EOS, labels = input_ids (the model shifts them).

    Adds ``input_ids``, ``attention_mask``, ``labels`` and keeps the original columns. A text longer
    than ``max_length`` raises rather than being cut (a cut bio loses facts). ``num_proc`` as in
    ``tokenize_qa``.

    Usage: ``bios = tokenize_bios(dd["bios"], tok, max_length=128)``.
    """
    eos = _check_inputs(dataset, tokenizer, ["text"], max_length, "tokenize_bios")

    def encode(batch: dict[str, list]) -> dict[str, list]:
        texts = tokenizer(batch["text"], add_special_tokens=False)["input_ids"]
        out: dict[str, list] = {"input_ids": [], "attention_mask": [], "labels": []}
        for i, t in enumerate(texts):
            ids = list(t) + [eos]
            _add_row(out, ids, list(ids), max_length, lambda: (
                f"tokenize_bios: text {i} of this batch needs {len(ids)} tokens (with EOS) but "
                f"max_length={max_length}; pass a larger max_length"))
        return out

    return _map(dataset, tokenizer, encode, "tokenize_bios", max_length, num_proc, "tokenize bios")
