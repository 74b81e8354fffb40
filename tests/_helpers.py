"""Shared test helpers: tiny random-init models of every supported family, padded data, the seed snippet.

Imported explicitly (`from tests._helpers import make_model`), never through conftest.
"""
from __future__ import annotations

import torch
import transformers

from fastfreeze.data import PaddingCollator

VOCAB = 97
_COMMON = dict(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=4, num_attention_heads=4,
               intermediate_size=64, max_position_embeddings=64)


def _llama_like(cfg_cls, **extra):
    return lambda: cfg_cls(**_COMMON, num_key_value_heads=2, tie_word_embeddings=False, **extra)


# family -> (config factory, model class name, names for the seed snippet: embeddings, layer list)
FAMILY_CONFIGS = {
    "llama": (_llama_like(transformers.LlamaConfig), "LlamaForCausalLM", ["model.embed_tokens"], "model.layers"),
    "mistral": (_llama_like(transformers.MistralConfig, sliding_window=None), "MistralForCausalLM",
                ["model.embed_tokens"], "model.layers"),
    "qwen2": (_llama_like(transformers.Qwen2Config), "Qwen2ForCausalLM", ["model.embed_tokens"], "model.layers"),
    "qwen3": (_llama_like(transformers.Qwen3Config, head_dim=8), "Qwen3ForCausalLM", ["model.embed_tokens"],
              "model.layers"),
    "gemma2": (lambda: transformers.Gemma2Config(**_COMMON, num_key_value_heads=2, head_dim=8,
                                                  tie_word_embeddings=True, sliding_window=8,
                                                  final_logit_softcapping=30.0),
               "Gemma2ForCausalLM", ["model.embed_tokens"], "model.layers"),
    "gemma3_text": (lambda: transformers.Gemma3TextConfig(**_COMMON, num_key_value_heads=2, head_dim=8,
                                                           tie_word_embeddings=False, sliding_window=8),
                    "Gemma3ForCausalLM", ["model.embed_tokens"], "model.layers"),
    "phi3": (lambda: transformers.Phi3Config(**_COMMON, num_key_value_heads=2, tie_word_embeddings=False,
                                             pad_token_id=0, resid_pdrop=0.0, embd_pdrop=0.0,
                                             attention_dropout=0.0),
             "Phi3ForCausalLM", ["model.embed_tokens"], "model.layers"),
    "gpt_neox": (lambda: transformers.GPTNeoXConfig(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=4,
                                                    num_attention_heads=4, intermediate_size=64,
                                                    max_position_embeddings=64, rotary_pct=0.5,
                                                    hidden_dropout=0.0, attention_dropout=0.0,
                                                    tie_word_embeddings=False),
                 "GPTNeoXForCausalLM", ["gpt_neox.embed_in"], "gpt_neox.layers"),
    "gpt2": (lambda: transformers.GPT2Config(vocab_size=VOCAB, n_embd=32, n_layer=4, n_head=4, n_positions=64,
                                             resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0),
             "GPT2LMHeadModel", ["transformer.wte", "transformer.wpe"], "transformer.h"),
}
FAMILIES = list(FAMILY_CONFIGS)


def make_model(family: str, seed: int = 0, attn: str = "eager", dtype=torch.float32):
    cfg_fn, cls_name, _, _ = FAMILY_CONFIGS[family]
    cfg = cfg_fn()
    torch.manual_seed(seed)
    model = getattr(transformers, cls_name)(cfg)
    model.config._attn_implementation = attn
    if hasattr(model, "set_attn_implementation"):
        try:
            model.set_attn_implementation(attn)
        except Exception:
            pass
    return model.to(dtype)


def seed_snippet_freeze(model, family: str, k: int) -> None:
    """The recipe users run today (written independently of fastfreeze): requires_grad=False on the
    embedding(s) and the first k blocks."""
    _, _, embeds, layers = FAMILY_CONFIGS[family]
    for name in embeds:
        for p in model.get_submodule(name).parameters():
            p.requires_grad = False
    for layer in model.get_submodule(layers)[:k]:
        for p in layer.parameters():
            p.requires_grad = False


def make_rows(n: int = 16, seed: int = 1, min_len: int = 5, max_len: int = 12):
    g = torch.Generator().manual_seed(seed)
    rows = []
    for _ in range(n):
        t = int(torch.randint(min_len, max_len + 1, (1,), generator=g))
        ids = torch.randint(1, VOCAB, (t,), generator=g).tolist()
        rows.append({"input_ids": ids, "labels": ids})
    return rows


def pad_collator(padding_side: str = "right", pad_to: int | None = None) -> PaddingCollator:
    """Pads input_ids (0), attention_mask and labels (-100) to the longest row (at least `pad_to`), on either side."""
    return PaddingCollator(0, padding_side=padding_side, pad_to=pad_to)
