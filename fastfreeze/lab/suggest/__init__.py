"""`fastfreeze suggest-k`: choose the frozen depth k for the next task from a short probe, before training it.

Usage:
    from fastfreeze.lab.suggest import ProbeSettings, resolve, suggest_k
    result = suggest_k(resolve("runs/demo"), ProbeSettings(steps=50))
    result["suggestion"]["rows"]   # per-depth evidence; ["k"] is None (docs/suggest-k.md)

`probe` runs the probe (per-layer update sizes, orthogonality to the old task's update, old-task accuracy
after the probe with each depth frozen), `rule` turns it into a suggestion (the rule is in its docstring),
`compare` checks a suggestion against the arms of a finished run, `inputs` finds the files.
"""
from __future__ import annotations

from transformers import AutoModelForCausalLM

from fastfreeze.data import PaddingCollator, tokenize_qa
from fastfreeze.lab.continual.evaluate import EvalSet
from fastfreeze.lab.suggest.inputs import Inputs, load_splits, load_tokenizer, resolve
from fastfreeze.lab.suggest.probe import ProbeSettings, run_probe
from fastfreeze.lab.suggest.rule import LEARN_MIN, TIE, markdown, suggest


def suggest_k(inp: Inputs, settings: ProbeSettings, old_split: str = "train", learn_min: float = LEARN_MIN,
              tie: float = TIE, log=print) -> dict:
    """Load the model, the checkpoint before it (if any), the data and the tokenizer; probe; apply the rule.

    Returns {"inputs", "probe", "suggestion"} (JSON-ready). `old_split` is the old task's split scored
    after the probe: "train" (its QA-trained people; the default, so no test row is read) or "test".
    """
    tok = load_tokenizer(inp.tokenizer)
    old_raw, new_raw = load_splits(inp, old_split)
    old_ds = tokenize_qa(old_raw, tok, inp.max_length)
    new_ds = tokenize_qa(new_raw, tok, inp.max_length)
    new_train = new_ds.select_columns([c for c in new_ds.column_names if c in ("input_ids", "attention_mask",
                                                                                  "labels")])
    old_eval = EvalSet(old_ds, tok.pad_token_id, settings.eval_examples, settings.seed)
    new_eval = EvalSet(new_ds, tok.pad_token_id, settings.eval_examples, settings.seed)
    model = AutoModelForCausalLM.from_pretrained(str(inp.model))
    previous = AutoModelForCausalLM.from_pretrained(str(inp.previous)) if inp.previous else None
    probe = run_probe(model, previous, new_train, old_eval, new_eval, PaddingCollator(tok.pad_token_id),
                      settings, log=log)
    return {
        "inputs": {"model": str(inp.model), "previous": str(inp.previous) if inp.previous else None,
                   "data": str(inp.data) if inp.data else inp.data_files, "tokenizer": str(inp.tokenizer),
                   "old_task": inp.old_task, "old_split": old_split, "new_task": inp.new_task},
        "probe": probe,
        "suggestion": suggest(probe, learn_min, tie),
    }


__all__ = ["Inputs", "LEARN_MIN", "ProbeSettings", "TIE", "markdown", "resolve", "run_probe", "suggest", "suggest_k"]
