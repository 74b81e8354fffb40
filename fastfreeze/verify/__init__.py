"""`fastfreeze verify`: prove on your model and data that FastFreezeTrainer trains exactly like the plain freeze recipe.

Modules: `run` (the two arms and the comparison: `verify`), `report` (tolerances, results, the
printed table), `inputs` (model and data loading), `measure` (step time, memory, weight
snapshots). The command line is `fastfreeze.cli.verify`.

Usage:
    from fastfreeze.verify import verify
    report = verify(model, rows, FreezeConfig(num_frozen_layers=4), steps=8); print(report); assert report.passed
"""
from .inputs import load_model_and_tokenizer, load_rows, pad_token_id
from .report import ArmResult, Tolerances, VerifyError, VerifyReport
from .run import reference_freeze, verify

__all__ = ["ArmResult", "Tolerances", "VerifyError", "VerifyReport", "load_model_and_tokenizer", "load_rows",
           "pad_token_id", "reference_freeze", "verify"]
