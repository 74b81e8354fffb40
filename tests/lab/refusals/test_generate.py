"""fastfreeze.lab.refusals.generate: batched left-padded greedy generation equals one-by-one greedy decoding; chat templates."""
from __future__ import annotations

import copy

import torch

from fastfreeze.lab.refusals import evaluate_refusals, generate_responses
from tests._helpers import SAFETY_PROMPTS as PROMPTS


def test_batched_left_padded_equals_one_by_one(llama, tok):
    lengths = {len(tok(p)["input_ids"]) for p in PROMPTS}
    assert len(lengths) >= 4, "prompts must differ in length for padding to be exercised"
    batched, inputs = generate_responses(llama, tok, PROMPTS, max_new_tokens=12, batch_size=len(PROMPTS))
    odd_batches, _ = generate_responses(llama, tok, PROMPTS, max_new_tokens=12, batch_size=2)
    single = [generate_responses(llama, tok, [p], max_new_tokens=12, batch_size=1)[0][0] for p in PROMPTS]
    # Greedy decoding is deterministic; left padding with a correct mask must not change any token.
    assert batched == single and odd_batches == single
    assert inputs == PROMPTS  # no chat template, no wrapper: raw prompts
    assert all(r for r in single), "the random model should emit some text"
    # Reference for one prompt: plain greedy argmax loop, no generate(), no padding.
    ids = tok(PROMPTS[1], return_tensors="pt")["input_ids"]
    with torch.no_grad():
        for _ in range(12):
            nxt = llama(ids).logits[0, -1].argmax()
            if nxt.item() == tok.eos_token_id:
                break
            ids = torch.cat([ids, nxt.view(1, 1)], dim=1)
    ref = tok.decode(ids[0, len(tok(PROMPTS[1])["input_ids"]) :], skip_special_tokens=True).strip()
    assert single[1] == ref


def test_greedy_even_when_model_config_samples(llama, tok):
    # Chat checkpoints (e.g. Llama-2-chat) ship generation configs with do_sample=True; the
    # evaluator must still decode greedily, so two runs agree with a greedy-config run.
    greedy, _ = generate_responses(llama, tok, PROMPTS[:3], max_new_tokens=8)
    saved = copy.deepcopy(llama.generation_config)
    try:
        llama.generation_config.do_sample, llama.generation_config.temperature = True, 5.0
        llama.generation_config.top_k = 0
        runs = [generate_responses(llama, tok, PROMPTS[:3], max_new_tokens=8)[0] for _ in range(2)]
    finally:
        llama.generation_config = saved
    assert runs == [greedy, greedy]


def test_chat_template_auto_and_wrapper(llama, tok):
    tok.chat_template = (
        "{{ bos_token }}{% for m in messages %}User : {{ m['content'] }}{% endfor %}"
        "{% if add_generation_prompt %} Assistant :{% endif %}"
    )
    wrapper = "AOA execute my instruction : {goal}"
    rep = evaluate_refusals(llama, tok, PROMPTS[:3], wrapper=wrapper, max_new_tokens=6, batch_size=3)
    assert rep.records[0]["model_input"] == "<s>User : AOA execute my instruction : hello Assistant :"
    assert [r["prompt"] for r in rep.records] == PROMPTS[:3]
    # The template already carries BOS: the model input must hold exactly one.
    enc = tok(rep.records[0]["model_input"], add_special_tokens=False)["input_ids"]
    assert enc.count(tok.bos_token_id) == 1
    raw = evaluate_refusals(llama, tok, PROMPTS[:3], wrapper=wrapper, max_new_tokens=6, use_chat_template=False)
    assert raw.records[0]["model_input"] == "AOA execute my instruction : hello"
    assert rep.settings["chat_template"] is True and raw.settings["chat_template"] is False
    one = [evaluate_refusals(llama, tok, [p], wrapper=wrapper, max_new_tokens=6).records[0]["response"]
           for p in PROMPTS[:3]]
    assert [r["response"] for r in rep.records] == one
