"""fastfreeze.lab.continual.safety_eval: the runner's refusal-proxy evaluation of a checkpoint, and its rows in the results."""
from __future__ import annotations

import json

import pytest

from fastfreeze.lab.continual.config import ConfigError, SafetyConfig
from fastfreeze.lab.continual.safety_eval import SafetyEvaluator, safety_rows
from tests._helpers import FakeSafetyModel, safety_tokenizer


def _prompts(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def test_rates_per_wrapper_benign_refusals_and_records(tmp_path):
    harmful = _prompts(tmp_path / "harmful.jsonl", [{"goal": "bad request"}, {"goal": "hello"}])
    benign = _prompts(tmp_path / "benign.jsonl", [{"goal": "hello", "answer": "Sure here is how"},
                                                  {"goal": "bad request", "answer": "Sure"}])
    cfg = SafetyConfig(enabled=True, harmful_prompts=harmful, benign_prompts=benign, benign_answer_column="answer",
                       wrappers={"plain": None}, max_new_tokens=4, batch_size=2, use_chat_template=False)
    tok = safety_tokenizer()
    summary = SafetyEvaluator(cfg).run(FakeSafetyModel(tok), tok, tmp_path / "out" / "records.json")
    # The fake model refuses prompts containing "bad" and complies otherwise.
    assert summary["harmful"]["plain"] == {"jailbreak_rate": 0.5, "refusal_rate": 0.5, "n": 2}
    assert summary["benign"] == {"refusal_rate": 0.5, "n": 2, "helpful_rate": 0.5}
    records = json.loads((tmp_path / "out" / "records.json").read_text())
    assert set(records) == {"harmful/plain", "benign"} and summary["records"].endswith("records.json")


def test_unreadable_prompt_file_is_a_config_error(tmp_path):
    (tmp_path / "p.jsonl").write_text('{"text": "x"}\n')
    with pytest.raises(ConfigError, match="safety: .*column 'goal' not found"):
        SafetyEvaluator(SafetyConfig(enabled=True, harmful_prompts=str(tmp_path / "p.jsonl")))


def test_safety_rows_flatten_the_stages_of_each_arm():
    stage = {"harmful": {"plain": {"jailbreak_rate": 0.25}}, "benign": {"refusal_rate": 0.1, "helpful_rate": 0.9}}
    results = {"baseline": [0.5], "arms": {"seq": {"accuracy_matrix": [[0.75]], "safety": [stage, stage, None]}}}
    rows = safety_rows(results)
    assert [(r["arm"], r["stage"], r["task_exact_match"]) for r in rows] == [
        ("seq", "before Task 0", 0.5), ("seq", "after Task 0", 0.75)]
    assert rows[0]["jailbreak"] == {"plain": 0.25} and rows[0]["helpful"] == 0.9
    assert safety_rows({"baseline": [0.5], "arms": {"seq": {"accuracy_matrix": [[0.75]]}}}) == []
