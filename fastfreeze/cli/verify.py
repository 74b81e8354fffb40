"""`fastfreeze verify`: train a few steps with the plain freeze recipe and with FastFreezeTrainer, and compare.

Usage: fastfreeze verify --model runs/base --data train.jsonl --num-frozen-layers 4
Exit codes: 0 PASS, 1 FAIL, 2 bad input (path, column, memory). The library call is
`fastfreeze.verify.verify`; this module only parses the options, loads the inputs and prints.
"""
from __future__ import annotations

import dataclasses
import shutil
import sys
import tempfile
from dataclasses import dataclass, field


@dataclass
class VerifyArguments:
    """Options of `fastfreeze verify` (HfArgumentParser: `--num-frozen-layers` or `--num_frozen_layers`)."""

    model: str = field(metadata={"help": "local model directory (save_pretrained) or a Hub name in your HF cache"})
    data: str | None = field(default=None, metadata={
        "help": "save_to_disk directory or a .txt (one example per line), .json, .jsonl, .csv or .parquet file; "
                "default: built-in biographies"})
    num_frozen_layers: int | None = field(default=None, metadata={"help": "k (default: half the layers)"})
    steps: int = field(default=8, metadata={"help": "optimizer steps per arm"})
    dtype: str | None = field(default=None, metadata={
        "choices": ["fp32", "bf16", "fp16"], "help": "default: bf16 on a GPU, fp32 on CPU"})
    kernels: str = field(default="auto", metadata={"choices": ["auto", "triton", "torch"]})
    cache: str = field(default="none", metadata={"choices": ["none", "memory", "disk"]})
    cache_dir: str | None = field(default=None, metadata={
        "help": "directory of a disk cache (default with --cache disk: a temporary directory, removed at the end)"})
    sequential: bool = field(default=False, metadata={
        "help": "one model copy: run the arms one after the other from initial weights saved to a temp dir"})
    batch_size: int = 4
    grad_accum: int = 1
    max_length: int = field(default=256, metadata={"help": "tokens per row (longer rows are cut)"})
    block_size: int | None = field(default=None, metadata={
        "help": "tokenize the text, concatenate it and cut it into rows of exactly N tokens, as HF's run_clm.py "
                "does (instead of one row per example; --max-length then does not apply)"})
    learning_rate: float = 1e-4
    optim: str = field(default="adamw_torch", metadata={
        "help": "Trainer optimizer; 'sgd' keeps updates proportional to gradients (see docs)"})
    seed: int = 0
    split: str = field(default="train", metadata={"help": "split of a save_to_disk DatasetDict"})
    text_column: str | None = field(default=None, metadata={"help": "default: 'text' when present"})
    prompt_column: str | None = field(default=None, metadata={"help": "default: 'prompt' (loss not on it)"})
    completion_column: str | None = field(default=None, metadata={"help": "default: 'completion' (loss on it)"})
    freeze_embeddings: bool = True
    untie_embeddings: bool = False
    report_json: str | None = field(default=None, metadata={"help": "also write the report as JSON here"})


def _parse(argv: list[str] | None):
    """The options, or the exit code when parsing ended the command (--help: 0, a usage error: 2)."""
    from transformers import HfArgumentParser

    parser = HfArgumentParser(VerifyArguments, prog="fastfreeze verify", description=__doc__.splitlines()[0])
    try:
        (a,) = parser.parse_args_into_dataclasses(args=list(sys.argv[1:] if argv is None else argv))
    except SystemExit as e:  # argparse: --help (0) or a usage error (2)
        return int(e.code or 0)
    except ValueError as e:  # HfArgumentParser: arguments it does not know
        print(f"fastfreeze verify: {e}; see `fastfreeze verify --help`.", file=sys.stderr)
        return 2
    return a


def _run(a: VerifyArguments, temp_cache: str | None):
    """Load the model and rows the options name and run `verify`; returns the report."""
    import torch

    from fastfreeze.config import FreezeConfig
    from fastfreeze.families import resolve
    from fastfreeze.verify import VerifyError, verify
    from fastfreeze.verify.inputs import load_model_and_tokenizer, load_rows, pad_token_id, rows_needed

    cuda = torch.cuda.is_available()
    dtype = a.dtype or ("bf16" if cuda else "fp32")
    # Validate the knobs before loading a possibly large model; k is settled once the depth is known.
    config = FreezeConfig(num_frozen_layers=a.num_frozen_layers or 0, freeze_embeddings=a.freeze_embeddings,
                          untie_embeddings=a.untie_embeddings, kernels=a.kernels,
                          cache=None if a.cache == "none" else a.cache, cache_dir=a.cache_dir or temp_cache)
    if a.block_size is not None and a.block_size < 2:
        raise VerifyError(f"--block-size {a.block_size} must be >= 2 (a row needs a next token to predict).")
    model, tokenizer = load_model_and_tokenizer(a.model, dtype)
    if a.num_frozen_layers is None:
        config = dataclasses.replace(config, num_frozen_layers=resolve(model).num_layers // 2)
    if cuda:
        model.to("cuda")
    limit = rows_needed(a.steps, a.batch_size, a.grad_accum, config.cache is not None)
    rows = load_rows(a.data, tokenizer, a.max_length, limit, a.split, a.text_column, a.prompt_column,
                     a.completion_column, block_size=a.block_size)
    return verify(model, rows, config, a.steps, dtype=dtype, batch_size=a.batch_size, grad_accum=a.grad_accum,
                  learning_rate=a.learning_rate, seed=a.seed, sequential=a.sequential, optim=a.optim,
                  pad_token_id=pad_token_id(tokenizer), use_cpu=not cuda)


def main(argv: list[str] | None = None) -> int:
    """`fastfreeze verify ...`: 0 on PASS, 1 on FAIL, 2 on bad input.

    Usage: fastfreeze verify --model runs/base --data train.jsonl --num-frozen-layers 4
    """
    a = _parse(argv)
    if isinstance(a, int):
        return a
    from fastfreeze import _io
    from fastfreeze.config import FreezeConfigError
    from fastfreeze.families import UnsupportedModelError
    from fastfreeze.verify import VerifyError

    temp_cache = tempfile.mkdtemp(prefix="fastfreeze-verify-cache-") if a.cache == "disk" and not a.cache_dir else None
    try:
        report = _run(a, temp_cache)
    except (VerifyError, FreezeConfigError, UnsupportedModelError) as e:
        print(f"fastfreeze verify: {e}", file=sys.stderr)
        return 2
    finally:
        if temp_cache is not None:
            shutil.rmtree(temp_cache, ignore_errors=True)
    if a.block_size is not None:
        report.notes.append(f"data: text concatenated and cut into blocks of {a.block_size} tokens (--block-size)")
    if temp_cache is not None:
        report.notes.append(f"disk cache in a temporary directory ({temp_cache}), removed at the end")
    print(report)
    if a.report_json:
        _io.write_json(a.report_json, report.to_dict(), indent=2)
    return 0 if report.passed else 1
