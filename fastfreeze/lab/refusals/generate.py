"""Greedy, batched, left-padded generation of responses to prompts (what the refusal evaluation scores).

Usage: ``responses, model_inputs = generate_responses(model, tok, ["Hi"], max_new_tokens=8)``
"""
from __future__ import annotations

import contextlib
from typing import Iterator, Sequence

import torch

from fastfreeze.trace import eval_mode
from fastfreeze.lab.refusals.prompts import check_wrapper, wrap_prompt

__all__ = ["generate_responses"]


def _build_inputs(tokenizer, prompts: Sequence[str], wrapper: str | None, use_chat_template) -> tuple[list[str], bool]:
    """Return the texts to feed the model and whether they already carry special tokens."""
    if use_chat_template not in ("auto", True, False):
        raise ValueError(f"use_chat_template must be 'auto', True or False, got {use_chat_template!r}.")
    has_template = bool(getattr(tokenizer, "chat_template", None))
    if use_chat_template is True and not has_template:
        raise ValueError(
            "use_chat_template=True but the tokenizer has no chat template; set tokenizer.chat_template "
            "or pass use_chat_template='auto' / False to feed the raw prompts."
        )
    apply = has_template and use_chat_template in ("auto", True)
    texts = [wrap_prompt(wrapper, p) if wrapper is not None else p for p in prompts]
    if apply:
        texts = [
            tokenizer.apply_chat_template([{"role": "user", "content": t}], tokenize=False, add_generation_prompt=True)
            for t in texts
        ]
    return texts, apply


def _check_args(prompts, max_new_tokens, batch_size, wrapper) -> list[str]:
    if isinstance(prompts, str):
        raise TypeError("prompts must be a list of strings, not one string; wrap it as [prompt].")
    prompts = list(prompts)
    if not prompts:
        raise ValueError("no prompts given; pass at least one prompt (see load_prompts).")
    bad = [i for i, p in enumerate(prompts) if not isinstance(p, str)]
    if bad:
        raise TypeError(f"prompts must be strings; item {bad[0]} is {type(prompts[bad[0]]).__name__}.")
    if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int) or max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be a positive int, got {max_new_tokens!r}.")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}.")
    if wrapper is not None:
        check_wrapper(wrapper)
    return prompts


@contextlib.contextmanager
def _generation_mode(model: torch.nn.Module, tokenizer) -> Iterator[None]:
    """Left padding with a pad token (eos if none) and the model in eval mode; everything restored after.
    Per-module flags, not just model.training (`trace.eval_mode`): a fastfreeze model keeps its frozen
    prefix in eval mode while the rest trains."""
    old_side, old_pad = tokenizer.padding_side, tokenizer.pad_token
    try:
        tokenizer.padding_side = "left"  # decoder-only generation continues from the right end
        if tokenizer.pad_token is None:
            if tokenizer.eos_token is None:
                raise ValueError("the tokenizer has neither a pad nor an eos token; set tokenizer.pad_token.")
            # Safe for batching: padded positions are masked out by the attention mask.
            tokenizer.pad_token = tokenizer.eos_token
        with eval_mode(model):
            yield
    finally:
        tokenizer.padding_side = old_side
        if tokenizer.pad_token != old_pad:
            tokenizer.pad_token = old_pad


def _greedy_kwargs(model, tokenizer, max_new_tokens: int) -> dict:
    kwargs = dict(do_sample=False, num_beams=1, max_new_tokens=max_new_tokens, pad_token_id=tokenizer.pad_token_id)
    model_eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    if model_eos is None and tokenizer.eos_token_id is not None:
        kwargs["eos_token_id"] = tokenizer.eos_token_id
    return kwargs


def generate_responses(
    model,
    tokenizer,
    prompts: Sequence[str],
    *,
    max_new_tokens: int = 32,
    batch_size: int = 16,
    use_chat_template: bool | str = "auto",
    wrapper: str | None = None,
) -> tuple[list[str], list[str]]:
    """Greedy-decode a response to each prompt; return ``(responses, model_inputs)`` in input order.

    Batched with LEFT padding (the tokenizer's padding side and pad token are restored afterwards),
    prompts sorted by length so batches pad little, `do_sample=False`, exactly `max_new_tokens` at
    most, no grad, the model in eval mode (each module's mode restored afterwards). `wrapper` (a
    template with ``{goal}``) is applied before the chat template; the chat template is used when the
    tokenizer has one (``"auto"``), always (True, error if missing) or never (False).

    Usage: ``responses, inputs = generate_responses(model, tok, ["Hi"], max_new_tokens=8)``
    """
    prompts = _check_args(prompts, max_new_tokens, batch_size, wrapper)
    texts, templated = _build_inputs(tokenizer, prompts, wrapper, use_chat_template)
    try:
        device = next(model.parameters()).device
    except StopIteration:
        device = torch.device("cpu")
    responses: list[str | None] = [None] * len(texts)
    with _generation_mode(model, tokenizer), torch.no_grad():
        gen_kwargs = _greedy_kwargs(model, tokenizer, max_new_tokens)
        # A chat template already holds BOS etc.; adding special tokens again would double them.
        lengths = [len(tokenizer(t, add_special_tokens=not templated)["input_ids"]) for t in texts]
        order = sorted(range(len(texts)), key=lambda i: (lengths[i], i))
        for start in range(0, len(order), batch_size):
            idx = order[start : start + batch_size]
            enc = tokenizer([texts[i] for i in idx], return_tensors="pt", padding=True, add_special_tokens=not templated)
            enc = {k: v.to(device) for k, v in enc.items() if k in ("input_ids", "attention_mask")}
            out = model.generate(**enc, **gen_kwargs)
            decoded = tokenizer.batch_decode(out[:, enc["input_ids"].shape[1] :], skip_special_tokens=True)
            for i, text in zip(idx, decoded):
                responses[i] = text.strip()
    assert all(r is not None for r in responses)  # every index is in exactly one batch
    return responses, texts  # type: ignore[return-value]
