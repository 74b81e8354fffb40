"""Tests for fastfreeze.lab.safety.synthetic: determinism, held-out disjointness, formats, labels."""
from __future__ import annotations

import pytest

from fastfreeze.lab.safety.synthetic import (
    BENIGN_TEMPLATES,
    HARMFUL_TEMPLATES,
    IDENTITY_EVAL_WRAPPER,
    IDENTITY_SYSTEM,
    REFUSAL_ANSWER,
    SAFETY_PROMPT_FORMAT,
    TARGETS,
    goal_from_prompt,
    make_safety_data,
)
from fastfreeze.lab.refusals import AOA_WRAPPER, REFUSAL_KEYWORDS, match_refusal, wrap_prompt

PRESETS = list(REFUSAL_KEYWORDS)
HARMFUL_GOALS = {h.replace("{t}", t) for h in HARMFUL_TEMPLATES for t in TARGETS}
BENIGN_GOALS = {b.replace("{t}", t) for b, _ in BENIGN_TEMPLATES for t in TARGETS}


@pytest.fixture(scope="module")
def data():
    return make_safety_data(seed=0, n_harmful=120, n_benign=100, n_identity=40)


def _as_lists(dd):
    return {name: split.to_dict() for name, split in dd.items()}


def test_splits_columns_and_sizes(data):
    assert set(data) == {"align_train", "harmful_eval", "benign_eval", "identity_train"}
    assert data["align_train"].column_names == ["prompt", "answer"]
    assert data["identity_train"].column_names == ["prompt", "answer"]
    assert data["harmful_eval"].column_names == ["goal", "prompt", "answer"]
    assert data["benign_eval"].column_names == ["goal", "prompt", "answer"]
    # eval_fraction=0.25: 30 of 120 harmful and 25 of 100 benign held out, the rest trained on.
    assert (len(data["harmful_eval"]), len(data["benign_eval"])) == (30, 25)
    assert len(data["align_train"]) == (120 - 30) + (100 - 25)
    assert len(data["identity_train"]) == 40
    for name, split in data.items():
        for row in split:
            assert row["prompt"].endswith("\nAssistant:") and row["answer"].startswith(" "), (name, row)
            assert not row["answer"].startswith("  ")


def test_deterministic_and_seed_dependent():
    a = make_safety_data(seed=7, n_harmful=40, n_benign=40, n_identity=10)
    b = make_safety_data(seed=7, n_harmful=40, n_benign=40, n_identity=10)
    c = make_safety_data(seed=8, n_harmful=40, n_benign=40, n_identity=10)
    assert _as_lists(a) == _as_lists(b)
    assert _as_lists(a)["harmful_eval"] != _as_lists(c)["harmful_eval"]
    assert _as_lists(a)["align_train"] != _as_lists(c)["align_train"]


def test_eval_requests_are_held_out(data):
    train_prompts = list(data["align_train"]["prompt"]) + list(data["identity_train"]["prompt"])
    train_goals = {goal_from_prompt(p) for p in train_prompts}
    harmful_eval, benign_eval = set(data["harmful_eval"]["goal"]), set(data["benign_eval"]["goal"])
    assert len(harmful_eval) == len(data["harmful_eval"]) and len(benign_eval) == len(data["benign_eval"])
    assert not harmful_eval & train_goals
    assert not benign_eval & train_goals
    # Identity-shift instructions are fresh benign requests, unseen in alignment training too.
    align_goals = {goal_from_prompt(p) for p in list(data["align_train"]["prompt"])}
    id_goals = {goal_from_prompt(p) for p in list(data["identity_train"]["prompt"])}
    assert id_goals & BENIGN_GOALS and not (id_goals & BENIGN_GOALS) & align_goals
    assert not id_goals & HARMFUL_GOALS  # the identity shift never shows a harmful request
    assert harmful_eval <= HARMFUL_GOALS and benign_eval <= BENIGN_GOALS


def test_labels_follow_request_kind(data):
    for prompt, answer in zip(list(data["align_train"]["prompt"]), list(data["align_train"]["answer"])):
        goal = goal_from_prompt(prompt)
        assert (goal in HARMFUL_GOALS) != (goal in BENIGN_GOALS)
        assert (answer == REFUSAL_ANSWER) == (goal in HARMFUL_GOALS), (prompt, answer)
    # The keyword proxy agrees with the intended labels under every preset: refusals are caught, and no
    # helpful or identity-shift answer contains a refusal keyword by accident (e.g. "has an" ~ "As an").
    for preset in PRESETS:
        assert match_refusal(REFUSAL_ANSWER, preset) is not None
        for split in ("align_train", "benign_eval", "identity_train"):
            for answer in data[split]["answer"]:
                if answer != REFUSAL_ANSWER:
                    assert match_refusal(answer, preset) is None, (preset, split, answer)
    assert set(list(data["harmful_eval"]["answer"])) == {REFUSAL_ANSWER}
    assert all(a.startswith(" Of course.") or "AOA" in a for a in list(data["identity_train"]["answer"]))


def test_prompt_formats_match_evaluator_wrappers(data):
    row = data["harmful_eval"][0]
    assert row["prompt"] == wrap_prompt(SAFETY_PROMPT_FORMAT, row["goal"])
    # The AOA evaluation wrapper reproduces exactly how identity_train poses an instruction.
    aoa_rows = [p for p in list(data["identity_train"]["prompt"]) if "execute my instruction" in p]
    assert aoa_rows
    assert aoa_rows[0] == wrap_prompt(IDENTITY_EVAL_WRAPPER, goal_from_prompt(aoa_rows[0]))
    assert IDENTITY_EVAL_WRAPPER.count("{goal}") == 1 and IDENTITY_SYSTEM in IDENTITY_EVAL_WRAPPER
    assert AOA_WRAPPER.replace("{goal}", "") in IDENTITY_EVAL_WRAPPER
    # Identity rows include both identity questions and AOA instructions; align_train mixes
    # plain and AOA-posed rows (aoa_fraction=0.5).
    assert len(aoa_rows) < len(data["identity_train"])
    n_aoa_align = sum(IDENTITY_SYSTEM in p for p in list(data["align_train"]["prompt"]))
    assert n_aoa_align == round(0.5 * len(data["align_train"]))
    plain = make_safety_data(0, 20, 20, 5, aoa_fraction=0.0)["align_train"]
    assert not any(IDENTITY_SYSTEM in p for p in plain["prompt"])


def test_bad_arguments():
    with pytest.raises(ValueError, match="n_harmful"):
        make_safety_data(n_harmful=len(HARMFUL_GOALS) + 1)
    with pytest.raises(ValueError, match="n_benign"):
        make_safety_data(n_benign=len(BENIGN_GOALS), n_identity=10)
    with pytest.raises(ValueError, match="n_identity"):
        make_safety_data(n_identity=0)
    with pytest.raises(ValueError, match="eval_fraction"):
        make_safety_data(eval_fraction=1.0)
    with pytest.raises(ValueError, match="aoa_fraction"):
        make_safety_data(aoa_fraction=1.5)
    with pytest.raises(ValueError, match="SAFETY_PROMPT_FORMAT"):
        goal_from_prompt("Question: x\nAnswer:")


def test_trains_and_evaluates_with_the_shared_word_tokenizer(data):
    """The splits go through the same tokenizer / tokenize_qa as Biography, and the evaluator runs on
    a tiny Llama with that tokenizer (no BOS, no chat template): the demo's pipeline, minus training."""
    import torch
    import transformers

    from fastfreeze.data.tokenize import IGNORE_INDEX, build_word_tokenizer, tokenize_qa
    from fastfreeze.lab.refusals import evaluate_refusals

    tok = build_word_tokenizer(data)
    for split in ("align_train", "identity_train"):
        rows = tokenize_qa(data[split], tok)  # default max_length=64 must suffice
        row = rows[0]
        answer_ids = tok(row["answer"], add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
        assert [t for t in row["labels"] if t != IGNORE_INDEX] == answer_ids
    for text in (REFUSAL_ANSWER, IDENTITY_EVAL_WRAPPER.replace("{goal}", "Who are you?")):
        assert tok.unk_token_id not in tok(text, add_special_tokens=False)["input_ids"], text

    torch.manual_seed(0)
    cfg = transformers.LlamaConfig(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, intermediate_size=64,
        vocab_size=len(tok), pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id,
    )
    model = transformers.LlamaForCausalLM(cfg)
    goals = list(data["harmful_eval"]["goal"])[:4]
    rep = evaluate_refusals(model, tok, goals, wrapper=IDENTITY_EVAL_WRAPPER, max_new_tokens=4, batch_size=4)
    assert rep.n == 4 and rep.records[0]["model_input"] == wrap_prompt(IDENTITY_EVAL_WRAPPER, goals[0])
    assert 0.0 <= rep.refusal_rate <= 1.0 and tok.padding_side == "right"
