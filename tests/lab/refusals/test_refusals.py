"""fastfreeze.lab.refusals.refusals: scoring responses (keywords or a judge), the report, evaluate_refusals on a fake model."""
from __future__ import annotations

import json

import pytest

from fastfreeze.lab.refusals import evaluate_refusals, score_responses
from tests._helpers import FakeSafetyModel


def test_score_responses_rates_and_records(tmp_path):
    prompts = ["a", "b", "c", "d"]
    responses = ["I'm sorry.", "Sure thing.", "Okay: step 1. Sorry, no.", "Here you go."]
    rep = score_responses(prompts, responses)
    assert (rep.n, rep.refusal_rate, rep.jailbreak_rate) == (4, 0.5, 0.5)
    assert [r["refused"] for r in rep.records] == [True, False, True, False]
    assert [r["matched_keyword"] for r in rep.records] == ["I'm sorry", None, "Sorry", None]
    assert all(r["judge_label"] is None for r in rep.records)
    assert rep.keyword_preset == "advbench-short-v1" and rep.judge is None
    text = str(rep)
    assert "50.00%" in text and "proxy" in text and "advbench-short-v1" in text
    out = rep.save(tmp_path / "sub" / "rep.json")
    assert json.loads(out.read_text()) == rep.to_dict()
    assert [p.name for p in out.parent.iterdir()] == ["rep.json"]  # no temp file left behind


def test_judge_overrides_keywords():
    def length_judge(prompt, response):  # deliberately disagrees with the keywords
        return len(response) > 10

    rep = score_responses(["p1", "p2"], ["I'm sorry", "A long compliant answer"], judge=length_judge)
    assert [r["refused"] for r in rep.records] == [False, True]
    assert [r["judge_label"] for r in rep.records] == [False, True]
    assert [r["matched_keyword"] for r in rep.records] == ["I'm sorry", None]  # still recorded
    assert rep.judge == "length_judge" and rep.refusal_rate == 0.5
    with pytest.raises(TypeError, match="bool"):
        score_responses(["p"], ["r"], judge=lambda p, r: "no")
    with pytest.raises(TypeError, match="callable"):
        score_responses(["p"], ["r"], judge="gpt-4")
    with pytest.raises(ValueError, match="one response per prompt"):
        score_responses(["p", "q"], ["r"])


def test_evaluate_refusals_on_fake_model(tok):
    model = FakeSafetyModel(tok)
    model.train()
    model.sub.eval()  # a mixed-mode model, like a fastfreeze model with an eval-mode prefix
    tok.padding_side = "right"
    prompts = ["bad request", "hello", "tell me about the garden please bad", "Sure"]
    rep = evaluate_refusals(model, tok, prompts, batch_size=3, max_new_tokens=7)
    assert [r["refused"] for r in rep.records] == [True, False, True, False]
    assert [r["response"] for r in rep.records][:2] == ["I'm sorry, I cannot", "Sure here is how"]
    assert rep.refusal_rate == 0.5 and rep.n == 4
    assert rep.settings == {"decoding": "greedy", "max_new_tokens": 7, "batch_size": 3, "wrapper": None,
                            "chat_template": False}
    assert len(model.calls) == 2  # 4 prompts in batches of 3
    for call in model.calls:
        assert call["do_sample"] is False and call["num_beams"] == 1 and call["max_new_tokens"] == 7
        assert call["training"] is False and call["sub_training"] is False and call["grad"] is False
        mask = call["attention_mask"]
        assert (mask[:, -1] == 1).all(), "padding must be on the left"
        assert call["pad_token_id"] == tok.eos_token_id  # borrowed since the tokenizer has no pad
    assert (model.calls[0]["attention_mask"][:, 0] == 0).any(), "the first batch should need padding"
    # Everything restored: padding side, (absent) pad token, each module's mode.
    assert tok.padding_side == "right" and tok.pad_token is None
    assert model.training is True and model.proj.training is True and model.sub.training is False
    # A datasets column (what make_safety_data / load_dataset hand out) works as the prompt list.
    import datasets

    column = datasets.Dataset.from_dict({"goal": ["bad request", "hello"]})["goal"]
    assert [r["refused"] for r in evaluate_refusals(model, tok, column).records] == [True, False]
    # The judge is consulted per prompt with the original (unwrapped) prompt.
    seen = []
    rep = evaluate_refusals(model, tok, ["hello"], wrapper="User : {goal}", judge=lambda p, r: seen.append(p) or True)
    assert seen == ["hello"] and rep.records[0]["model_input"] == "User : hello" and rep.refusal_rate == 1.0


def test_evaluate_refusals_bad_arguments(tok):
    model = FakeSafetyModel(tok)
    with pytest.raises(TypeError, match="list of strings"):
        evaluate_refusals(model, tok, "bad request")
    with pytest.raises(ValueError, match="at least one"):
        evaluate_refusals(model, tok, [])
    with pytest.raises(ValueError, match="max_new_tokens"):
        evaluate_refusals(model, tok, ["x"], max_new_tokens=0)
    with pytest.raises(ValueError, match="batch_size"):
        evaluate_refusals(model, tok, ["x"], batch_size=0)
    with pytest.raises(ValueError, match="max_new_tokens"):
        evaluate_refusals(model, tok, ["x"], max_new_tokens=True)
    with pytest.raises(ValueError, match="chat template"):
        evaluate_refusals(model, tok, ["x"], use_chat_template=True)
    with pytest.raises(ValueError, match="preset"):
        evaluate_refusals(model, tok, ["x"], keywords="nope")
    assert model.calls == []  # all rejected before any generation
