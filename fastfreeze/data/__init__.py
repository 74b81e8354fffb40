"""Datasets for fastfreeze: the synthetic Biography benchmark, its tokenization, and the one pad collator.

Usage::

    from fastfreeze.data import BiographyConfig, make_biography, build_word_tokenizer, tokenize_qa
    dd = make_biography(BiographyConfig.preset("quick"))
    tok = build_word_tokenizer(dd)
    train = tokenize_qa(dd["task0_train"], tok)
"""

from fastfreeze.data.biography import (
    ATTRIBUTES,
    PRESETS,
    BiographyConfig,
    Person,
    dataset_config,
    generate_people,
    make_biography,
    question,
)
from fastfreeze.data.biography_pools import company_city
from fastfreeze.data.collate import IGNORE_INDEX, PaddingCollator
from fastfreeze.data.tokenize import (
    EOS_TOKEN,
    PAD_TOKEN,
    UNK_TOKEN,
    build_word_tokenizer,
    tokenize_bios,
    tokenize_qa,
)

__all__ = [
    "ATTRIBUTES",
    "EOS_TOKEN",
    "IGNORE_INDEX",
    "PAD_TOKEN",
    "PRESETS",
    "UNK_TOKEN",
    "BiographyConfig",
    "PaddingCollator",
    "Person",
    "build_word_tokenizer",
    "company_city",
    "dataset_config",
    "generate_people",
    "make_biography",
    "question",
    "tokenize_bios",
    "tokenize_qa",
]
