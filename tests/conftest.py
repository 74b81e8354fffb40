"""Shared test fixtures: tiny random-init models of every supported family, padded data, the seed snippet."""
from __future__ import annotations

import os
import warnings

import torch

# Triton kernels run on CPU only through the interpreter, and it must be on before anything imports
# triton (loading a transformers model class does), or the kernels are compiled for a missing GPU.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest  # noqa: E402
import transformers  # noqa: E402

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("WANDB_DISABLED", "true")
warnings.filterwarnings("ignore", message=".*tied to the input embedding.*")
# Tiny models: intra-op threading costs more than it gains, and on a shared 2-core machine it
# oversubscribes the cores (measured: a tiny generate went from ~25 s to 0.2 s with one thread).
torch.set_num_threads(1)

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


class PadCollator:
    """Pads input_ids (0), attention_mask and labels (-100) to the longest row, on either side."""

    def __init__(self, padding_side: str = "right", pad_to: int | None = None):
        self.padding_side, self.pad_to = padding_side, pad_to

    def __call__(self, features):
        width = max(max(len(f["input_ids"]) for f in features), self.pad_to or 0)
        ids, mask, labels = [], [], []
        for f in features:
            pad = width - len(f["input_ids"])
            row_ids, row_labels, row_mask = list(f["input_ids"]), list(f["labels"]), [1] * len(f["input_ids"])
            if self.padding_side == "right":
                ids.append(row_ids + [0] * pad); labels.append(row_labels + [-100] * pad); mask.append(row_mask + [0] * pad)
            else:
                ids.append([0] * pad + row_ids); labels.append([-100] * pad + row_labels); mask.append([0] * pad + row_mask)
        return {"input_ids": torch.tensor(ids), "attention_mask": torch.tensor(mask), "labels": torch.tensor(labels)}


@pytest.fixture(autouse=True)
def _one_thread():
    """Every test starts single-threaded and leaves the process that way, whatever it changed
    (module-scoped fixtures run between tests, so they inherit it too)."""
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(1)


@pytest.fixture
def tmp_out(tmp_path):
    return str(tmp_path / "out")
