"""`fastfreeze sft`: TRL's `trl sft` with the embedding and bottom k decoder layers frozen, run without autograd and cached.

Usage: fastfreeze sft --model runs/base --data train.jsonl --num-frozen-layers 4 --output_dir runs/sft
       fastfreeze sft --config run.yaml [--any-SFTConfig-or-TrainingArguments-flag VALUE ...]
       accelerate launch -m fastfreeze.cli sft --config run.yaml   # or: torchrun --nproc_per_node 2 -m fastfreeze.cli sft ...

The options are TRL's own (`trl.TrlParser` over ScriptArguments, SFTConfig, ModelConfig and DatasetMixtureConfig,
as `trl sft` parses them; `--config` YAML keys set defaults, flags override them), plus `FreezeArguments` (the
FreezeConfig fields) and two spellings: `--model` for `--model_name_or_path`, `--data` for `--dataset_name` (also as
YAML keys). Differences from `trl sft`: models, tokenizers and `--data` load from local files only (a Hub id works
when it is already in the HF cache); `--data` may be a file; unknown flags or YAML keys are errors (`trl sft` hands
YAML leftovers to `accelerate launch`; here run `accelerate launch ... -m fastfreeze.cli sft` yourself).
Exit codes: 0 trained and saved, 2 bad input (flag, path, YAML, k), one line on stderr.
"""
from __future__ import annotations

import dataclasses
import os
import sys
from dataclasses import dataclass, field

PROG = "fastfreeze sft"
# YAML keys accepted for the two short spellings, and the TRL key each stands for.
YAML_ALIASES = {"model": "model_name_or_path", "data": "dataset_name"}
_FILE_BUILDERS = {".json": "json", ".jsonl": "json", ".csv": "csv", ".parquet": "parquet", ".txt": "text"}
_DATA_KINDS = ".jsonl/.json/.csv/.parquet/.txt file, a save_to_disk directory or a directory of such files"


class UsageError(ValueError):
    """A bad flag, path, YAML file or value: printed as one line, exit code 2."""


@dataclass
class FreezeArguments:
    """FreezeConfig's fields as options (`--num-frozen-layers` or `--num_frozen_layers`; the same keys in YAML)."""

    num_frozen_layers: int | None = field(default=None, metadata={
        "help": "k: freeze the input embedding and decoder layers 0..k-1 (required; 0..num_hidden_layers)"})
    freeze_embeddings: bool = field(default=True, metadata={"help": "also freeze the input embedding (the prefix)"})
    untie_embeddings: bool = field(default=False, metadata={
        "help": "give a tied LM head its own copy so it trains while the embedding stays frozen"})
    kernels: str = field(default="auto", metadata={"choices": ["auto", "triton", "torch"]})
    cache: str | None = field(default="none", metadata={
        "choices": ["none", "memory", "disk"], "help": "reuse the frozen prefix's output per example"})
    cache_dir: str | None = field(default=None, metadata={"help": "directory of the disk cache (--cache disk)"})
    cache_max_bytes: int | None = field(default=None, metadata={"help": "store no entries beyond this many bytes"})
    offload_prefix: bool = field(default=True, metadata={
        "help": "with a cache, move prefix weights off the accelerator once every example is cached"})
    fused_loss: bool = field(default=True, metadata={"help": "chunked LM-head loss with Triton kernels"})
    probe: bool = field(default=True, metadata={"help": "prove the fast path on a probe batch at install"})
    allow_eval_prefix: bool = field(default=False, metadata={
        "help": "accept an eval-mode prefix when the frozen layers have dropout"})
    rms_norm: bool = field(default=True, metadata={"help": "the RMSNorm Triton kernel (off: torch, to bisect)"})
    swiglu: bool = field(default=True, metadata={"help": "the SwiGLU MLP Triton kernel (off: torch, to bisect)"})

    def to_freeze_config(self):
        """The FreezeConfig these options describe (its own validation applies)."""
        from fastfreeze.config import FreezeConfig, FreezeConfigError

        if self.num_frozen_layers is None:
            raise UsageError("--num-frozen-layers K is required (the embedding and layers 0..K-1 are frozen).")
        values = dataclasses.asdict(self)
        values["cache"] = None if values["cache"] in (None, "none") else values["cache"]
        try:
            return FreezeConfig(**values)
        except FreezeConfigError as e:
            raise UsageError(str(e)) from e


def _aliased(cls, name: str, alias: str):
    """`cls` with field `name` also spelled `--alias` (HfArgumentParser's `aliases` metadata); the rest is TRL's."""
    original = {f.name: f for f in dataclasses.fields(cls)}[name]
    help_text = f"{original.metadata.get('help', '')} (also --{alias})".strip()
    spec = field(default=original.default, metadata={**original.metadata, "help": help_text, "aliases": [f"--{alias}"]})
    return dataclasses.make_dataclass(cls.__name__, [(name, original.type, spec)], bases=(cls,))


def make_parser():
    """TRL's parser for `trl sft` plus FreezeArguments and the --model / --data spellings; errors raise UsageError.

    Usage: script, training, model, mixture, freeze = make_parser().parse_args_and_config(argv)
    """
    from trl import (
        DatasetMixtureConfig,
        ModelConfig,
        ScriptArguments,
        SFTConfig,
        TrlParser,
    )

    class Parser(TrlParser):
        def error(self, message):  # argparse would print the whole (very long) usage first
            raise UsageError(message)

        def set_defaults_with_config(self, **config):
            for alias, key in YAML_ALIASES.items():
                if alias in config:
                    value = config.pop(alias)
                    if key in config and config[key] != value:
                        raise UsageError(f"the YAML sets both {alias}: {value!r} and {key}: {config[key]!r}; keep one.")
                    config[key] = value
            return super().set_defaults_with_config(**config)

    types = (_aliased(ScriptArguments, "dataset_name", "data"), SFTConfig,
             _aliased(ModelConfig, "model_name_or_path", "model"), DatasetMixtureConfig, FreezeArguments)
    return Parser(types, prog=PROG, description=__doc__.splitlines()[0])


def parse(argv: list[str]):
    """(script, training, model, mixture, freeze) arguments; UsageError for anything the parsers refuse.

    Usage: script_args, training_args, model_args, mixture_args, freeze_args = parse(sys.argv[1:])
    """
    import yaml

    if argv.count("--config") and argv[-1] == "--config":
        raise UsageError("--config needs a YAML file path.")
    try:
        _check_config_file(argv)
        return make_parser().parse_args_and_config(argv)
    except FileNotFoundError as e:
        raise UsageError(f"--config {e.filename!r}: no such file.") from e
    except yaml.YAMLError as e:
        raise UsageError(f"--config is not valid YAML: {' '.join(str(e).split())}") from e
    except UsageError:
        raise
    except (ValueError, TypeError) as e:  # unknown flags or YAML keys, and SFTConfig's own checks
        raise UsageError(" ".join(str(e).split())) from e


def _check_config_file(argv: list[str]) -> None:
    """A --config file must hold a mapping (option: value); said here in our words, not TRL's."""
    import yaml

    if "--config" not in argv:
        return
    path = argv[argv.index("--config") + 1]
    if not os.path.isfile(path):
        return  # TRL's FileNotFoundError is turned into one line by parse()
    with open(path) as f:
        loaded = yaml.safe_load(f)
    if not isinstance(loaded, dict):
        raise UsageError(f"--config {path!r} must hold a YAML mapping of option: value lines, "
                         f"not a {type(loaded).__name__}.")


def _looks_local(path: str) -> bool:
    """A name that can only be a local path, not a Hub id `org/name` (which may contain dots: `Qwen2.5-0.5B`)."""
    return path.startswith((".", "/", "~")) or path.count("/") > 1


def check_model_path(path: str | None, num_frozen_layers: int, **config_kwargs) -> None:
    """Refuse a missing model and a k beyond its depth before any weights load (the trainer checks k again).
    `config_kwargs` (revision, trust_remote_code) reach AutoConfig as they reach the model."""
    from transformers import AutoConfig

    if not path:
        raise UsageError("--model PATH is required (or --model_name_or_path, or `model_name_or_path:` in the YAML).")
    if not os.path.exists(path) and _looks_local(path):
        raise UsageError(f"--model {path!r} does not exist; pass a directory written by save_pretrained.")
    if os.path.isdir(path) and not os.path.exists(os.path.join(path, "config.json")):
        raise UsageError(f"--model {path!r} has no config.json; pass a directory written by save_pretrained.")
    try:
        config = AutoConfig.from_pretrained(path, local_files_only=True, **config_kwargs)
    except (OSError, ValueError) as e:
        raise UsageError(f"--model {path!r}: not a local model or one in the HF cache ({' '.join(str(e).split())})") from e
    depth = getattr(config.get_text_config(), "num_hidden_layers", None)
    if depth is not None and not 0 <= num_frozen_layers <= depth:
        raise UsageError(f"--num-frozen-layers {num_frozen_layers}: the model has {depth} decoder layers; "
                         f"use a value in 0..{depth}.")


def load_local_dataset(path: str, streaming: bool = False, name: str | None = None):
    """A DatasetDict from a local data file, a save_to_disk directory or a directory of data files (never the Hub).

    Usage: splits = load_local_dataset("train.jsonl")   # {"train": Dataset}
    """
    import datasets

    if not os.path.exists(path):
        raise UsageError(f"--data {path!r} does not exist; pass a {_DATA_KINDS}.")
    if name is not None and not os.path.isdir(path):
        raise UsageError(f"--dataset_config {name!r} selects a config of a folder of data files; {path!r} is not one.")
    if os.path.isdir(path):
        if any(os.path.exists(os.path.join(path, marker)) for marker in ("dataset_dict.json", "state.json")):
            data = datasets.load_from_disk(path)
            data = data if isinstance(data, datasets.DatasetDict) else datasets.DatasetDict({"train": data})
            return datasets.IterableDatasetDict({k: v.to_iterable_dataset() for k, v in data.items()}) if streaming else data
        try:  # a folder of data files: datasets infers the format and the splits from the file names
            return datasets.load_dataset(path, name=name, streaming=streaming)
        except (ValueError, FileNotFoundError) as e:
            raise UsageError(f"--data {path!r}: no data files found in it ({' '.join(str(e).split())}).") from e
    builder = _FILE_BUILDERS.get(os.path.splitext(path)[1].lower())
    if builder is None:
        raise UsageError(f"--data {path!r}: unknown file type; pass a {_DATA_KINDS}.")
    return datasets.load_dataset(builder, data_files={"train": path}, streaming=streaming)


def load_splits(script_args, training_args, mixture_args):
    """(train, eval or None) as `trl sft` picks them: a `datasets:` mixture, else --data; eval only with eval_strategy."""
    if mixture_args.datasets:  # TRL's own loader, as `trl sft` (its entries name their own sources)
        from trl import get_dataset

        data = get_dataset(mixture_args)
    elif script_args.dataset_name:
        data = load_local_dataset(script_args.dataset_name, script_args.dataset_streaming, script_args.dataset_config)
    else:
        raise UsageError("--data FILE_OR_DIR is required (or --dataset_name, or a `datasets:` list in the YAML).")
    wanted = [script_args.dataset_train_split]
    if training_args.eval_strategy != "no":
        wanted.append(script_args.dataset_test_split)
    for split in wanted:
        if split not in data:
            raise UsageError(f"the data has splits {sorted(data)}, not {split!r}; pass --dataset_train_split / "
                             "--dataset_test_split (or --eval_strategy no).")
    return data[wanted[0]], (data[wanted[1]] if len(wanted) > 1 else None)


def load_model(model_args, training_args):
    """The model and its processor, loaded as SFTTrainer loads a model id (seeded, `trl sft`'s init kwargs, through
    `_hf_compat.trl_load_model`, the loader FastFreezeSFTTrainer uses), but from local files only.

    Usage: model, processor = load_model(model_args, training_args)
    """
    from transformers import AutoProcessor
    from transformers import set_seed
    from trl import get_quantization_config

    from fastfreeze._hf_compat import trl_load_model

    init = dict(revision=model_args.model_revision, attn_implementation=model_args.attn_implementation,
                dtype=model_args.dtype, local_files_only=True)
    init.update(training_args.model_init_kwargs or {})
    quantization = get_quantization_config(model_args)
    if quantization is not None:
        init["quantization_config"] = quantization  # the --load_in_4bit/8bit flags win over model_init_kwargs
    training_args.model_init_kwargs = init
    set_seed(training_args.seed)  # SFTTrainer seeds before creating a model from an id
    try:
        model = trl_load_model(model_args.model_name_or_path, training_args)
    finally:
        training_args.model_init_kwargs = None  # used here; SFTTrainer would warn that an instance ignores them
    processor = AutoProcessor.from_pretrained(model_args.model_name_or_path, revision=model_args.model_revision,
                                              trust_remote_code=training_args.trust_remote_code, local_files_only=True)
    return model, processor


def build_trainer(script_args, training_args, model_args, mixture_args, freeze_args):
    """The FastFreezeSFTTrainer `fastfreeze sft` trains: the arguments `trl sft` would pass, plus the freeze.

    Usage: build_trainer(*parse(argv)).train()
    """
    from trl import get_peft_config

    from fastfreeze.integrations.trl import FastFreezeSFTTrainer

    freeze_config = freeze_args.to_freeze_config()
    check_model_path(model_args.model_name_or_path, freeze_config.num_frozen_layers,
                     revision=model_args.model_revision, trust_remote_code=training_args.trust_remote_code)
    train, evaluation = load_splits(script_args, training_args, mixture_args)
    model, processor = load_model(model_args, training_args)
    return FastFreezeSFTTrainer(model=model, args=training_args, train_dataset=train, eval_dataset=evaluation,
                                processing_class=processor, peft_config=get_peft_config(model_args),
                                freeze_config=freeze_config)


def train_and_save(trainer, script_args, training_args) -> None:
    """Train, save the model to output_dir (plain `from_pretrained` loads it), push if asked, as `trl sft` does."""
    trainer.train(resume_from_checkpoint=training_args.resume_from_checkpoint)
    trainer.save_model(training_args.output_dir)
    trainer.accelerator.print(f"{PROG}: model saved to {training_args.output_dir}")
    if training_args.push_to_hub:
        trainer.push_to_hub(dataset_name=script_args.dataset_name)
    if hasattr(trainer, "end"):  # transformers >= 5.18: finish the trackers, destroy the process group
        trainer.end()


def main(argv: list[str] | None = None) -> int:
    """`fastfreeze sft ...`: 0 when trained and saved, 2 on bad input (one line on stderr).

    Usage: fastfreeze sft --model runs/base --data train.jsonl --num-frozen-layers 4 --output_dir runs/sft
    """
    from fastfreeze.config import FreezeConfigError
    from fastfreeze.families import UnsupportedModelError

    try:
        script_args, training_args, model_args, mixture_args, freeze_args = parse(
            list(sys.argv[1:] if argv is None else argv))
        trainer = build_trainer(script_args, training_args, model_args, mixture_args, freeze_args)
    except SystemExit as e:  # --help
        return int(e.code or 0)
    except (UsageError, FreezeConfigError, UnsupportedModelError) as e:
        print(f"{PROG}: error: {e} (see `{PROG} --help`)", file=sys.stderr)
        return 2
    train_and_save(trainer, script_args, training_args)
    return 0
