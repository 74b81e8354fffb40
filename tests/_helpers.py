"""Shared test helpers: tiny random-init models of every supported family, padded data, the seed snippet.

Imported explicitly (`from tests._helpers import make_model`), never through conftest.
"""
from __future__ import annotations

import torch
import transformers
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors

import fastfreeze.standin as ff_standin
import fastfreeze.trainer as ff_trainer
from fastfreeze._hf_compat import set_attn_implementation
from fastfreeze import FreezeConfig
from fastfreeze.data import PaddingCollator
from fastfreeze.verify import verify

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
    set_attn_implementation(model, attn)
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


def assert_losses_close(got, expected, *, rtol: float) -> None:
    """Two runs' per-step losses agree: the same, non-zero number of steps, and |got - expected| <= rtol * |expected|
    at every step. The tolerance has no default: each caller says why its value holds (dtype, kernels, ops).

    Usage: ``assert_losses_close(ff["losses"], ref["losses"], rtol=1e-5)  # fp32, same ops in both arms``
    """
    got, expected = list(got), list(expected)
    assert expected, "no losses to compare: the reference run recorded none"
    assert len(got) == len(expected), f"{len(got)} losses vs {len(expected)} in the reference"
    for step, (a, b) in enumerate(zip(got, expected, strict=True)):
        assert abs(a - b) <= rtol * abs(b), f"step {step}: loss {a} vs reference {b} (rtol {rtol})"


def pad_collator(padding_side: str = "right", pad_to: int | None = None) -> PaddingCollator:
    """Pads input_ids (0), attention_mask and labels (-100) to the longest row (at least `pad_to`), on either side."""
    return PaddingCollator(0, padding_side=padding_side, pad_to=pad_to)


def cache_rows(n_rows=5, dtype=torch.float32, seed=0, hidden=8):
    """Boundary rows of different lengths for the cache tests: {key: [n, hidden] tensor}."""
    g = torch.Generator().manual_seed(seed)
    out = {}
    for i in range(n_rows):
        n = 1 + (3 * i) % 7
        out[f"key{seed}-{i}"] = torch.randn(n, hidden, generator=g).to(dtype)
    return out


def fingerprint_tensors():
    """Two named tensors to fingerprint (the same in every process: seeded)."""
    g = torch.Generator().manual_seed(1)
    return [("embed.weight", torch.randn(16, 4, generator=g)), ("layers.0.w", torch.randn(4, 4, generator=g))]


# ------------------------------------------------------------------ verify: a tiny run, a fault in one arm
def run_verify(family="llama", k=2, steps=3, rows=None, **kw):
    """`verify` on a tiny model of `family` with k frozen layers (FreezeConfig fields pass through)."""
    cfg_kw = {key: kw.pop(key) for key in ("cache", "untie_embeddings", "kernels", "freeze_embeddings") if key in kw}
    return verify(make_model(family), rows or make_rows(4 * steps), FreezeConfig(num_frozen_layers=k, **cfg_kw),
                  steps=steps, **kw)


def inject_fault(monkeypatch, wrong):
    """Make `wrong(model, parts)` run inside FastFreezeTrainer's set-up only (after its probe): the reference
    arm never calls complete_freeze, so only the fastfreeze arm gets the fault."""
    original = ff_trainer.complete_freeze

    def faulty(runtime, device=None):
        runtime = original(runtime, device)
        wrong(runtime.target, runtime.parts)
        return runtime

    monkeypatch.setattr(ff_trainer, "complete_freeze", faulty)


def shift_output(module, eps=1e-3):
    """Add eps to hidden feature 0 only: a shift of every feature would vanish in the next LayerNorm."""
    def hook(mod, args, out):
        hidden = out if torch.is_tensor(out) else out[0]
        bump = torch.zeros_like(hidden)
        bump[..., 0] = eps
        return hidden + bump if torch.is_tensor(out) else (hidden + bump, *out[1:])
    module.register_forward_hook(hook)


# ------------------------------------------------------------------ safety: a word tokenizer, prompts, a fake model
SAFETY_WORDS = (
    "I'm sorry , I cannot help with that . Sure here is how to bake a cake bad request please "
    "tell me about the garden User : Assistant AOA execute my instruction hello world and of"
).split()
SAFETY_SPECIALS = ["<pad>", "<unk>", "<s>", "</s>"]


def safety_tokenizer() -> transformers.PreTrainedTokenizerFast:
    """Word-level tokenizer built locally (no download); BOS prepended, no pad token set."""
    vocab = {w: i for i, w in enumerate(SAFETY_SPECIALS + SAFETY_WORDS)}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.decoder = decoders.WordPiece(prefix="##")  # joins word tokens with spaces
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 2)])
    return transformers.PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>"
    )


# Prompts of different token lengths, so batches really are left-padded.
SAFETY_PROMPTS = [
    "hello",
    "tell me about the garden please",
    "bad request",
    "how to bake a cake and tell me about the world of AOA",
    "Sure",
]


class FakeSafetyModel(torch.nn.Module):
    """Stands in for a causal LM: answers "I'm sorry , I cannot" to prompts containing the token
    "bad", "Sure here is how" otherwise, and records what `generate` saw."""

    def __init__(self, tok):
        super().__init__()
        self.proj = torch.nn.Linear(2, 2)
        self.sub = torch.nn.Dropout(0.1)
        self.tok = tok
        self.calls = []

    def generate(self, input_ids, attention_mask, **kwargs):
        self.calls.append(
            dict(kwargs, training=self.training, sub_training=self.sub.training, grad=torch.is_grad_enabled(),
                 input_ids=input_ids.clone(), attention_mask=attention_mask.clone())
        )
        bad = self.tok.convert_tokens_to_ids("bad")
        refuse = self.tok.convert_tokens_to_ids("I'm sorry , I cannot".split())
        comply = self.tok.convert_tokens_to_ids("Sure here is how </s>".split())  # eos pads to equal length
        new = [refuse if (row == bad).any() else comply for row in input_ids]
        return torch.cat([input_ids, torch.tensor(new)], dim=1)


# ------------------------------------------------------------------ the safety demo at toy size
# A 2-layer model aligned for a few dozen steps: too small to learn much, big enough to run every stage.
TINY_MODEL = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, max_position_embeddings=128)
TINY_ALIGN = dict(num_train_epochs=2, learning_rate=3e-3, per_device_train_batch_size=32, lr_scheduler_type="constant")
TINY_DATA = dict(n_harmful=40, n_benign=40, n_identity=20)


# ------------------------------------------------------------------ PEFT
def lora_model(seed: int = 0, suffix_only: bool = True, k: int = 2, **lora):
    """A PEFT LoRA model on a tiny Llama: on the suffix blocks k.. (or on every block), seeded."""
    from peft import LoraConfig, get_peft_model  # peft is an optional extra

    from fastfreeze.integrations.peft import suffix_lora_kwargs

    model = make_model("llama")
    kw = suffix_lora_kwargs(model, k) if suffix_only else {}
    cfg = LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0, target_modules=["q_proj", "v_proj", "down_proj"], **kw, **lora)
    torch.manual_seed(seed)  # LoRA A init is random: same seed, same adapter in both arms
    return get_peft_model(model, cfg)


def fail_the_second_stand_in(monkeypatch) -> list:
    """The prefix's second stand-in fails to build (injected), the first already swapped in: a failure
    halfway through a swap. Returns the list that counts the builds tried."""
    made: list = []

    class FailingStandIn(ff_standin.StandIn):
        def __init__(self, *args, **kwargs):
            made.append(1)
            if len(made) == 2:
                raise RuntimeError("injected: the second stand-in fails")
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(ff_standin, "StandIn", FailingStandIn)
    return made
