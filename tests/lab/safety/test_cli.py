"""`fastfreeze safety eval | demo`: scores a saved model like the library call; bad input exits 2 naming the problem."""
from __future__ import annotations

import json

from transformers import AutoModelForCausalLM, AutoTokenizer

from fastfreeze.lab.safety.cli import main
from fastfreeze.lab.safety.synthetic import SAFETY_PROMPT_FORMAT
from fastfreeze.lab.refusals import evaluate_refusals


def test_cli_safety_eval_on_a_saved_model(tiny_demo, tmp_path, capsys):
    out, _ = tiny_demo
    model_dir = out / "aligned"
    goals = [json.loads(line)["goal"] for line in (out / "data" / "harmful_eval.jsonl").read_text().splitlines()]
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"goal": g}) + "\n" for g in goals[:6]))
    report_path = tmp_path / "report.json"
    rc = main(["eval", "--model", str(model_dir), "--prompts", str(prompts), "--wrapper", "demo",
               "--max-new-tokens", "12", "--output", str(report_path)])
    assert rc == 0
    saved = json.loads(report_path.read_text())
    assert saved["n"] == 6 and [r["prompt"] for r in saved["records"]] == goals[:6]
    model = AutoModelForCausalLM.from_pretrained(str(model_dir))
    tok = AutoTokenizer.from_pretrained(str(model_dir))
    direct = evaluate_refusals(model, tok, goals[:6], wrapper=SAFETY_PROMPT_FORMAT, max_new_tokens=12)
    assert [r["response"] for r in saved["records"]] == [r["response"] for r in direct.records]
    assert "jailbreak rate" in capsys.readouterr().out
    # Bad inputs: exit code 2 and a message naming the problem.
    assert main(["eval", "--model", str(model_dir), "--prompts", str(tmp_path / "nope.csv")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main(["eval", "--model", str(model_dir), "--prompts", str(prompts), "--column", "text"]) == 2
    assert "column 'text' not found" in capsys.readouterr().err
    assert main(["eval", "--model", str(tmp_path), "--prompts", str(prompts)]) == 2
    assert "not a save_pretrained folder" in capsys.readouterr().err
    assert main(["eval", "--model", str(model_dir), "--prompts", str(prompts), "--wrapper", "AOA: go"]) == 2
    assert main(["demo", "--ks", "9", "--output-dir", str(tmp_path / "d")]) == 2
    assert "ks=[9]" in capsys.readouterr().err
