"""The safety scenario's evaluation: jailbreak / over-refusal rates (a keyword proxy) before and after each task.

In a run whose config has ``safety: {enabled: true, ...}`` the runner calls `SafetyEvaluator` on the
starting model and on every task checkpoint of every arm; the rates land next to the task metrics
in results.json (``arms[name]["safety"]``) and, through `safety_rows`, in report.md. The paper's
setting is one task (an identity-shift fine-tune of an aligned chat model) with Freeze applied from
Task 0 (``{name: freeze, num_frozen_layers: 6, from_task: 0}``); see configs/safety_7b_example.yaml.
The toy version on CPU is `fastfreeze.lab.safety.demo`.

Usage:
    summary = SafetyEvaluator(cfg.safety).run(model, tokenizer, "out/safety/task0.json")
"""
from __future__ import annotations

import os
from pathlib import Path

from fastfreeze import _io
from fastfreeze.lab.refusals import evaluate_refusals, load_prompts
from fastfreeze.lab.continual.config import ConfigError, SafetyConfig
from fastfreeze.lab.continual.evaluate import answers_match

__all__ = ["SafetyEvaluator", "safety_rows"]


class SafetyEvaluator:
    """Loads the prompt files of a `SafetyConfig` once and scores models with them.

    Usage: ``SafetyEvaluator(cfg.safety).run(model, tokenizer, "out/safety/task0.json")`` -> summary dict.
    """

    def __init__(self, cfg: SafetyConfig):
        self.cfg = cfg
        try:
            self.harmful = load_prompts(cfg.harmful_prompts, column=cfg.column, limit=cfg.limit)
            self.benign = self.answers = None
            if cfg.benign_prompts is not None:
                self.benign = load_prompts(cfg.benign_prompts, column=cfg.column, limit=cfg.limit)
                if cfg.benign_answer_column is not None:
                    self.answers = load_prompts(cfg.benign_prompts, column=cfg.benign_answer_column, limit=cfg.limit)
        except (OSError, KeyError, ValueError) as e:
            raise ConfigError(f"safety: {e}") from None

    def _report(self, model, tokenizer, prompts, wrapper):
        c = self.cfg
        return evaluate_refusals(
            model, tokenizer, prompts, keywords=c.keywords, max_new_tokens=c.max_new_tokens,
            batch_size=c.batch_size, use_chat_template=c.use_chat_template, wrapper=wrapper,
        )

    def run(self, model, tokenizer, records_path: str | os.PathLike | None = None) -> dict:
        """Jailbreak rate per wrapper, benign refusal (and helpful) rates; per-prompt records to `records_path`."""
        summary: dict = {"harmful": {}, "benign": None}
        reports = {}
        for label, wrapper in self.cfg.wrappers.items():
            r = self._report(model, tokenizer, self.harmful, wrapper)
            reports[f"harmful/{label}"] = r.to_dict()
            summary["harmful"][label] = {"jailbreak_rate": r.jailbreak_rate, "refusal_rate": r.refusal_rate, "n": r.n}
        if self.benign is not None:
            r = self._report(model, tokenizer, self.benign, self.cfg.benign_wrapper)
            reports["benign"] = r.to_dict()
            summary["benign"] = {"refusal_rate": r.refusal_rate, "n": r.n, "helpful_rate": None}
            if self.answers is not None:
                hits = [answers_match(rec["response"], a) for rec, a in zip(r.records, self.answers)]
                summary["benign"]["helpful_rate"] = sum(hits) / len(hits)
        if records_path is not None:
            Path(records_path).parent.mkdir(parents=True, exist_ok=True)
            _io.write_json(records_path, reports, indent=2, ensure_ascii=False)
            summary["records"] = str(records_path)
        return summary


def safety_rows(results: dict) -> list[dict]:
    """Flat rows (arm, stage, jailbreak per wrapper, benign refusal/helpful, task metric) of a run's safety results."""
    rows = []
    for name, arm in results["arms"].items():
        for i, s in enumerate(arm.get("safety") or []):
            if s is None:
                continue
            task_em = results["baseline"][0] if i == 0 else arm["accuracy_matrix"][i - 1][i - 1]
            benign = s.get("benign") or {}
            rows.append({
                "arm": name,
                "stage": "before Task 0" if i == 0 else f"after Task {i - 1}",
                "jailbreak": {k: v["jailbreak_rate"] for k, v in s["harmful"].items()},
                "benign_refusal": benign.get("refusal_rate"),
                "helpful": benign.get("helpful_rate"),
                "task_exact_match": task_em,
            })
    return rows
