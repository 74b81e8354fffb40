"""Fixtures of the data tests: the quick Biography benchmark, its word tokenizer and tokenized Task-0 QA."""
from __future__ import annotations

import datasets
import pytest

from fastfreeze.data import BiographyConfig, build_word_tokenizer, make_biography, tokenize_qa


@pytest.fixture(scope="module")
def dd() -> datasets.DatasetDict:
    return make_biography(BiographyConfig.preset("quick"))


@pytest.fixture(scope="module")
def tok(dd):
    return build_word_tokenizer(dd)


@pytest.fixture(scope="module")
def qa(dd, tok):
    return tokenize_qa(dd["task0_train"], tok)
