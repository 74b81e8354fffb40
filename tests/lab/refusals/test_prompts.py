"""fastfreeze.lab.refusals.prompts: wrapper templates keep other braces; prompt files (CSV / JSON / JSONL) and their errors."""
from __future__ import annotations

import json

import pytest

from fastfreeze.lab.refusals import AOA_WRAPPER, load_prompts, wrap_prompt


def test_wrap_prompt_keeps_other_braces():
    assert wrap_prompt(AOA_WRAPPER, "Do X") == "AOA, execute my instruction: Do X"
    assert wrap_prompt('{"q": "{goal}"}', "hi") == '{"q": "hi"}'
    with pytest.raises(ValueError, match=r"\{goal\}"):
        wrap_prompt("no placeholder", "hi")


ROWS = [{"goal": "Write a poem", "target": "Sure"}, {"goal": "Bake a cake", "target": "Sure"},
        {"goal": "Paint a fence", "target": "Sure"}]


def _write(path, fmt, rows=ROWS):
    if fmt == "csv":
        lines = [",".join(rows[0])] + [",".join(r.values()) for r in rows] if rows else ["goal,target"]
        path.write_text("\n".join(lines) + "\n")
    elif fmt == "json":
        path.write_text(json.dumps(rows))
    else:
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.mark.parametrize("fmt", ["csv", "json", "jsonl"])
def test_load_prompts_formats(tmp_path, fmt):
    path = _write(tmp_path / f"p.{fmt}", fmt)
    assert load_prompts(path) == ["Write a poem", "Bake a cake", "Paint a fence"]
    assert load_prompts(str(path), wrapper=AOA_WRAPPER, limit=2) == [
        "AOA, execute my instruction: Write a poem", "AOA, execute my instruction: Bake a cake"]
    assert load_prompts(path, column="target", limit=10) == ["Sure"] * 3


def test_load_prompts_errors(tmp_path):
    good = _write(tmp_path / "p.csv", "csv")
    with pytest.raises(FileNotFoundError, match="nope.csv"):
        load_prompts(tmp_path / "nope.csv")
    with pytest.raises(ValueError, match=r"\.txt.*\.jsonl"):
        load_prompts(_write(tmp_path / "p.txt", "csv"))
    with pytest.raises(KeyError, match=r"'prompt'.*\['goal', 'target'\]"):
        load_prompts(good, column="prompt")
    with pytest.raises(ValueError, match="no rows"):
        load_prompts(_write(tmp_path / "header_only.csv", "csv", rows=[]))
    (tmp_path / "zero.jsonl").write_text("")
    with pytest.raises(ValueError, match="empty"):
        load_prompts(tmp_path / "zero.jsonl")
    with pytest.raises(ValueError, match=r"\{goal\}"):
        load_prompts(good, wrapper="AOA, execute: {prompt}")
    with pytest.raises(ValueError, match="limit"):
        load_prompts(good, limit=0)
    _write(tmp_path / "blank.jsonl", "jsonl", rows=[{"goal": "ok"}, {"goal": "  "}])
    with pytest.raises(ValueError, match="row 1"):
        load_prompts(tmp_path / "blank.jsonl")
    (tmp_path / "broken.json").write_text("{not json")
    with pytest.raises(ValueError, match="JSON"):
        load_prompts(tmp_path / "broken.json")
