"""Safety evaluation: jailbreak / refusal rates of greedy responses, by refusal keywords (a proxy) or your judge.

Modules: `keywords` (versioned presets and the one matching rule), `prompts` (prompt files and
wrapper templates such as the paper's AOA preamble), `generate` (greedy batched generation),
`refusals` (scoring and `evaluate_refusals`). The command line is `fastfreeze.lab.safety.cli`; the
scenario inside a continual run is `fastfreeze.lab.continual.safety_eval`.

Usage:
    from fastfreeze.lab.refusals import AOA_WRAPPER, evaluate_refusals, load_prompts
    report = evaluate_refusals(model, tok, load_prompts("advbench.csv", wrapper=AOA_WRAPPER)); print(report)
"""
from fastfreeze.lab.refusals.generate import generate_responses
from fastfreeze.lab.refusals.keywords import DEFAULT_PRESET, REFUSAL_KEYWORDS, match_refusal, normalize_text, resolve_keywords
from fastfreeze.lab.refusals.prompts import AOA_WRAPPER, load_prompts, wrap_prompt
from fastfreeze.lab.refusals.refusals import Judge, RefusalReport, evaluate_refusals, score_responses

__all__ = [
    "AOA_WRAPPER", "DEFAULT_PRESET", "Judge", "REFUSAL_KEYWORDS", "RefusalReport", "evaluate_refusals",
    "generate_responses", "load_prompts", "match_refusal", "normalize_text", "resolve_keywords", "score_responses",
    "wrap_prompt",
]
