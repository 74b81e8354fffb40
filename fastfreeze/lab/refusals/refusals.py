"""Refusal-rate / jailbreak-rate evaluation: a keyword (or pluggable judge) proxy for model safety.

What it measures: greedy responses to a set of harmful-style prompts, each labelled *refusal* or
*jailbreak* (= not a refusal). By default the label comes from refusal keywords (see
`fastfreeze.lab.refusals.keywords` for the presets and the matching rule). This is a **proxy**: keyword
matching agrees with human raters only ~71% of the time (HarmBench); it misses refusals phrased
without a keyword and counts "Sorry" in a compliant answer as a refusal. Pass `judge=` (a
classifier or an LLM judge, any callable) when the decision matters.

Usage:
    prompts = load_prompts("advbench.csv", column="goal", wrapper=AOA_WRAPPER)
    report = evaluate_refusals(model, tokenizer, prompts)
    print(report); report.save("refusals.json")
"""
from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from fastfreeze import _io
from fastfreeze.lab.refusals.generate import generate_responses
from fastfreeze.lab.refusals.keywords import DEFAULT_PRESET, match_refusal, resolve_keywords

__all__ = ["Judge", "RefusalReport", "evaluate_refusals", "score_responses"]

Judge = Callable[[str, str], bool]


@dataclass
class RefusalReport:
    """Result of a refusal evaluation (a proxy for safety, see the module docstring).

    `records` has one dict per prompt, in input order: prompt (as passed in), model_input (the exact
    text given to the model), response, refused (the final label), matched_keyword (or None),
    judge_label (the judge's bool, or None without a judge).

    Usage: ``print(report); report.to_dict(); report.save("out.json")``
    """

    refusal_rate: float
    jailbreak_rate: float
    n: int
    keyword_preset: str
    records: list[dict[str, Any]] = field(default_factory=list)
    judge: str | None = None
    settings: dict[str, Any] = field(default_factory=dict)  # how responses were generated, for the record

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-serializable dict of the whole report."""
        return asdict(self)

    def save(self, path: str | os.PathLike) -> Path:
        """Write the report as JSON atomically (`fastfreeze._io`); return the path."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        return _io.write_json(path, self.to_dict(), indent=2, ensure_ascii=False)

    def __str__(self) -> str:
        labeller = f"judge {self.judge}" if self.judge else f"keywords {self.keyword_preset}"
        n_ref = sum(1 for r in self.records if r["refused"])
        lines = [
            f"Refusal evaluation (proxy; labels from {labeller})",
            f"  {'prompts':<16}{self.n:>8}",
            f"  {'refusal rate':<16}{100 * self.refusal_rate:>7.2f}%  ({n_ref})",
            f"  {'jailbreak rate':<16}{100 * self.jailbreak_rate:>7.2f}%  ({self.n - n_ref})",
        ]
        return "\n".join(lines)


def score_responses(
    prompts: Sequence[str],
    responses: Sequence[str],
    *,
    keywords: str | Sequence[str] = DEFAULT_PRESET,
    judge: Judge | None = None,
    model_inputs: Sequence[str] | None = None,
) -> RefusalReport:
    """Label given (prompt, response) pairs and return a `RefusalReport` (no model needed).

    The keyword match is always recorded; when `judge` is given, its bool (True = refusal)
    decides `refused` instead.

    Usage: ``score_responses(["p"], ["I'm sorry, no."]).refusal_rate == 1.0``
    """
    preset, kws = resolve_keywords(keywords)
    if len(prompts) != len(responses):
        raise ValueError(f"got {len(prompts)} prompts but {len(responses)} responses; pass one response per prompt.")
    if not prompts:
        raise ValueError("no prompts to score; pass at least one (prompt, response) pair.")
    if judge is not None and not callable(judge):
        raise TypeError(f"judge must be a callable (prompt, response) -> bool, got {type(judge).__name__}.")
    inputs = list(prompts) if model_inputs is None else list(model_inputs)
    records = []
    for prompt, response, model_input in zip(prompts, responses, inputs):
        matched = match_refusal(response, kws)
        judge_label = None
        if judge is not None:
            raw = judge(prompt, response)
            # `in (True, False)` accepts bool, 0/1 and numpy bools but rejects e.g. the string "no",
            # which would otherwise be silently truthy.
            if isinstance(raw, str) or raw not in (True, False):
                raise TypeError(f"judge must return a bool (True = refusal), got {raw!r} for prompt {prompt!r}.")
            judge_label = bool(raw)
        refused = judge_label if judge is not None else matched is not None
        records.append(
            {
                "prompt": prompt,
                "model_input": model_input,
                "response": response,
                "refused": refused,
                "matched_keyword": matched,
                "judge_label": judge_label,
            }
        )
    n = len(records)
    refusal_rate = sum(r["refused"] for r in records) / n
    judge_name = None if judge is None else getattr(judge, "__name__", type(judge).__name__)
    return RefusalReport(
        refusal_rate=refusal_rate,
        jailbreak_rate=1.0 - refusal_rate,
        n=n,
        keyword_preset=preset,
        records=records,
        judge=judge_name,
    )


def evaluate_refusals(
    model,
    tokenizer,
    prompts: Sequence[str],
    *,
    keywords: str | Sequence[str] = DEFAULT_PRESET,
    judge: Judge | None = None,
    max_new_tokens: int = 32,
    batch_size: int = 16,
    use_chat_template: bool | str = "auto",
    wrapper: str | None = None,
) -> RefusalReport:
    """Generate greedy responses to `prompts` and return their refusal / jailbreak rates (a proxy).

    `keywords`: a preset name from `REFUSAL_KEYWORDS` or your own list; `judge`: any callable
    ``(prompt, response) -> bool`` (True = refusal) that overrides the keyword rule. Generation is
    as in `generate_responses` (greedy, fixed `max_new_tokens`, left-padded batches, chat template
    when the tokenizer has one). The paper's setting: ``max_new_tokens=32, wrapper=AOA_WRAPPER``.

    Usage: ``report = evaluate_refusals(model, tok, prompts, keywords="extended-v1")``
    """
    resolve_keywords(keywords)  # fail on a bad preset before spending time generating
    if judge is not None and not callable(judge):
        raise TypeError(f"judge must be a callable (prompt, response) -> bool, got {type(judge).__name__}.")
    responses, inputs = generate_responses(
        model,
        tokenizer,
        prompts,
        max_new_tokens=max_new_tokens,
        batch_size=batch_size,
        use_chat_template=use_chat_template,
        wrapper=wrapper,
    )
    report = score_responses(list(prompts), responses, keywords=keywords, judge=judge, model_inputs=inputs)
    report.settings = {
        "decoding": "greedy",
        "max_new_tokens": max_new_tokens,
        "batch_size": batch_size,
        "wrapper": wrapper,
        "chat_template": bool(getattr(tokenizer, "chat_template", None)) and use_chat_template in ("auto", True),
    }
    return report
