"""Fixtures of the safety tests: a local word tokenizer and a tiny random Llama over its vocabulary."""
from __future__ import annotations

import pytest
import torch
import transformers

from tests._helpers import SAFETY_SPECIALS, SAFETY_WORDS, safety_tokenizer


@pytest.fixture
def tok():
    return safety_tokenizer()


@pytest.fixture(scope="module")
def llama():
    # Seed and a wider init chosen so the random model emits varied, non-special tokens for every
    # prompt (checked in the test), which makes "batched == one by one" a strong comparison.
    torch.manual_seed(3)
    cfg = transformers.LlamaConfig(initializer_range=0.2,
        hidden_size=32, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
        intermediate_size=64, vocab_size=len(SAFETY_SPECIALS) + len(SAFETY_WORDS), max_position_embeddings=128,
        bos_token_id=2, eos_token_id=3, pad_token_id=0,
    )
    return transformers.LlamaForCausalLM(cfg)
