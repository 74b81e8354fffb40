"""Validated dataclasses for a continual-learning run, loaded from YAML (`fastfreeze continual CONFIG.yaml`)."""
from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from fastfreeze.lab.refusals.keywords import resolve_keywords
from fastfreeze.lab.continual.config_checks import (  # noqa: F401  (ConfigError, EarlyStopConfig, BudgetConfig: this module's API)
    BudgetConfig,
    ConfigError,
    EarlyStopConfig,
    _check_patterns,
    _type_ok,
    check_orthogonality,
    check_recovery,
    check_training_kwargs,
    saved_num_layers,
)

STRATEGIES = ("seq", "freeze", "replay", "ewc", "paper_freeze")
DATA_FILE_SUFFIXES = (".csv", ".json", ".jsonl")
MODEL_FAMILIES = ("llama", "gpt_neox")


def _from_dict(cls, data: Any, where: str):
    """Build dataclass `cls` from a mapping, rejecting unknown keys with the list of valid ones."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping, got {type(data).__name__} ({data!r}).")
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {unknown}; valid keys are {sorted(names)}.")
    for f in dataclasses.fields(cls):
        if f.name in data and not _type_ok(data[f.name], str(f.type)):
            raise ConfigError(f"{where}.{f.name}={data[f.name]!r} has the wrong type; expected {f.type}.")
    return cls(**data)


@dataclass
class ModelConfig:
    """A model built from scratch (`family` + sizes, via transformers config classes) or loaded from `path`."""

    family: str = "llama"
    hidden_size: int = 128
    num_hidden_layers: int = 4
    num_attention_heads: int = 4
    intermediate_size: int | None = None  # default: 4 x hidden (gpt_neox) / ~2.7 x hidden (llama)
    max_position_embeddings: int = 256
    path: str | None = None  # a local save_pretrained directory; overrides the shape fields

    def validate(self) -> None:
        if self.path is None and self.family not in MODEL_FAMILIES:
            raise ConfigError(f"model.family={self.family!r} is unknown; use one of {MODEL_FAMILIES} or set model.path.")
        if self.path is not None and not Path(self.path).is_dir():
            raise ConfigError(f"model.path={self.path!r} is not a directory; point it at a save_pretrained folder.")
        for name in ("hidden_size", "num_hidden_layers", "num_attention_heads", "max_position_embeddings"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"model.{name} must be > 0 (got {getattr(self, name)}).")
        if self.hidden_size % self.num_attention_heads:
            raise ConfigError(
                f"model.hidden_size={self.hidden_size} is not divisible by num_attention_heads={self.num_attention_heads}."
            )


@dataclass
class DataConfig:
    """The task data: a Biography preset (+ overrides of BiographyConfig fields) or a saved DatasetDict `path`."""

    preset: str | None = "tiny"
    overrides: dict = field(default_factory=dict)
    path: str | None = None
    files: dict | None = None  # {split: local CSV/JSON/JSONL file with prompt/answer columns}, e.g. task0_train
    tokenizer: str = "word"  # "word" (built from the data) or a local tokenizer directory
    max_length: int = 64  # QA sequences (prompt + answer + EOS)
    bios_max_length: int = 128

    def validate(self) -> None:
        if self.files is not None:
            self._validate_files()
        elif self.path is None and self.preset is None:
            raise ConfigError(
                "data: set data.preset (quick|tiny|paper), data.path (a save_to_disk folder) or data.files."
            )
        if self.path is not None and not Path(self.path).is_dir():
            raise ConfigError(f"data.path={self.path!r} is not a directory; save one with DatasetDict.save_to_disk.")
        if self.tokenizer != "word" and not Path(self.tokenizer).is_dir():
            raise ConfigError(f"data.tokenizer={self.tokenizer!r}: use 'word' or a local tokenizer directory.")

    def _validate_files(self) -> None:
        if self.path is not None:
            raise ConfigError("data: give either data.path or data.files, not both.")
        if not isinstance(self.files, dict) or not self.files:
            raise ConfigError("data.files: expected a mapping {split: file}, e.g. {task0_train: train.jsonl, ...}.")
        for split, f in self.files.items():
            if not isinstance(f, str) or not Path(f).is_file():
                raise ConfigError(f"data.files.{split}={f!r} is not a file; check the path.")
            if Path(f).suffix.lower() not in DATA_FILE_SUFFIXES:
                raise ConfigError(f"data.files.{split}={f!r}: use a {'/'.join(DATA_FILE_SUFFIXES)} file.")


@dataclass
class PretrainConfig:
    """Plain language-model pretraining on the biographies before Task 0 (kwargs go to TrainingArguments)."""

    enabled: bool = True
    training: dict = field(default_factory=dict)
    # Copy the shipped checkpoint whose recipe is this run's (continual/shipped.py), else pretrain. repr=False keeps it
    # out of the fingerprints: it says where the weights come from, not what they are (demo_checkpoint check).
    shipped: bool = field(default=False, repr=False)


@dataclass
class StrategyConfig:
    """One arm of the experiment: seq | freeze(num_frozen_layers, from_task) | replay(replay_fraction) | ewc(ewc_lambda)
    | paper_freeze(patterns, from_task): the official code's substring rule (continual/paper_sets.py), plain
    requires_grad=False and a plain Trainer; a reproduction aid, never a default."""

    name: str = "seq"
    label: str | None = None
    num_frozen_layers: int = 0
    freeze_embeddings: bool = True
    from_task: int = 1
    replay_fraction: float = 0.0
    ewc_lambda: float = 0.0
    ewc_fisher_batches: int = 32  # batches of the previous task used for the diagonal Fisher
    cache: str | None = None  # FreezeConfig.cache: None | "memory" | "disk"
    early_stop: dict | None = None  # EarlyStopConfig fields: stop each later task on a validation split
    patterns: list | None = None  # paper_freeze: parameter-name substrings, e.g. [embed_tokens, layers.0]

    @property
    def arm(self) -> str:
        """The arm's name in results and paths."""
        if self.label:
            return self.label
        if self.name == "freeze":
            return f"freeze{self.num_frozen_layers}" + ("_es" if self.early_stop is not None else "")
        return self.name + ("_es" if self.early_stop is not None else "")

    @property
    def stopping(self) -> "EarlyStopConfig | None":
        """The parsed early-stop settings (None: train every later task to the end)."""
        return None if self.early_stop is None else _from_dict(EarlyStopConfig, self.early_stop, "early_stop")

    def validate(self, num_layers: int | None, num_tasks: int) -> None:
        if self.name not in STRATEGIES:
            raise ConfigError(f"strategy {self.name!r} is unknown; use one of {STRATEGIES}.")
        if self.name == "freeze":
            # k=0 freezes the embedding only, which needs freeze_embeddings (else nothing is frozen).
            low = 0 if self.freeze_embeddings else 1
            if num_layers is not None and not low <= self.num_frozen_layers <= num_layers:
                raise ConfigError(
                    f"strategy freeze: num_frozen_layers={self.num_frozen_layers} is out of range; "
                    f"the model has {num_layers} decoder layers, so use {low}..{num_layers}."
                )
            if not 0 <= self.from_task < num_tasks:
                raise ConfigError(f"strategy freeze: from_task={self.from_task} must be in 0..{num_tasks - 1}.")
        _check_patterns(self.name, self.patterns, self.from_task, num_tasks)
        if self.name == "replay" and not 0.0 < self.replay_fraction <= 1.0:
            raise ConfigError(f"strategy replay: replay_fraction={self.replay_fraction} must be in (0, 1].")
        if self.name == "ewc" and self.ewc_lambda <= 0:
            raise ConfigError(f"strategy ewc: ewc_lambda={self.ewc_lambda} must be > 0.")
        if self.cache not in (None, "memory", "disk"):
            raise ConfigError(f"strategy cache={self.cache!r}: use null, 'memory' or 'disk'.")
        if self.early_stop is not None:
            self.stopping.validate(self.arm)

    def differs_from_seq_at(self, task: int) -> bool:
        """Whether this arm trains `task` differently from plain sequential fine-tuning."""
        if self.name in ("freeze", "paper_freeze"):
            return task >= self.from_task
        return self.name in ("replay", "ewc") and task >= 1


def strategy_dict(strat: StrategyConfig) -> dict:
    """An arm's fields as a dict; `patterns` only when set, so older arms' fingerprints and results stay as they were."""
    d = dict(strat.__dict__)
    if d.get("patterns") is None:
        d.pop("patterns", None)
    return d


@dataclass
class EvalConfig:
    """Evaluation: batch size, dense Task-0 evaluation during `dense_task`, and a generate-based cross-check."""

    batch_size: int = 256
    dense_task: int = 1
    dense_every: int = 5
    dense_until: int = 200
    dense_max_examples: int | None = None  # subsample the dense evaluation set (None = all)
    generate_check_examples: int = 0  # >0: also score this many examples with model.generate and record both


@dataclass
class RecoveryConfig:
    """Recovery test: fine-tune briefly on `fraction` of an old task's TRAIN people, score its TEST people."""

    enabled: bool = True
    task: int = 0
    fraction: float = 0.5
    arms: list | None = None  # None: every arm
    training: dict = field(default_factory=dict)
    # Recovery curve: recover from checkpoints taken at these steps of `curve_task` ("end" = its last step),
    # each multiplied by `step_scale` (the paper's steps scaled to a shorter task).
    curve_steps: list | None = None
    curve_task: int = 1
    step_scale: float = 1.0
    # Few-example recovery from the checkpoint at `few_from_step` (scaled): N QA rows of N different people,
    # `few_max_steps` optimizer steps each; the half-of-the-people recovery at that step is the curve's.
    few_examples: list | None = None
    few_from_step: int = 150
    few_max_steps: int = 30


@dataclass
class OrthogonalityConfig:
    """Update orthogonality during `task`: windows [0, boundary_step) vs [boundary_step, end)."""

    enabled: bool = True
    task: int = 1
    boundary_step: int = 150
    energy: float = 0.99
    arms: list | None = None


@dataclass
class SafetyConfig:
    """Refusal-proxy evaluation before Task 0 and after every task (see fastfreeze.lab.continual.safety_eval).

    `harmful_prompts`: local CSV/JSON/JSONL file (column `column`); each entry of `wrappers`
    (label -> template with {goal}, or null for the bare prompt) gives one jailbreak rate.
    `benign_prompts` (optional): refusal rate on harmless requests = over-refusal; with
    `benign_answer_column`, also the share of responses equal to the reference answer.
    """

    enabled: bool = False
    harmful_prompts: str | None = None
    benign_prompts: str | None = None
    column: str = "goal"
    wrappers: dict = field(default_factory=lambda: {"plain": None})
    benign_wrapper: str | None = None
    benign_answer_column: str | None = None
    keywords: Any = "advbench-short-v1"  # a preset name or a list of keywords
    max_new_tokens: int = 32
    batch_size: int = 16
    limit: int | None = None  # first `limit` prompts of each file
    use_chat_template: Any = "auto"

    def validate(self) -> None:
        if not self.enabled:
            return
        if not self.harmful_prompts:
            raise ConfigError("safety.harmful_prompts: set it to a CSV/JSON/JSONL file of prompts (or enabled: false).")
        for name in ("harmful_prompts", "benign_prompts"):
            f = getattr(self, name)
            if f is not None and not Path(f).is_file():
                raise ConfigError(f"safety.{name}={f!r} does not exist; point it at a local CSV/JSON/JSONL file.")
        if not isinstance(self.wrappers, dict) or not self.wrappers:
            raise ConfigError("safety.wrappers: expected a mapping {label: template with {goal} or null}.")
        for label, w in [*self.wrappers.items(), ("benign_wrapper", self.benign_wrapper)]:
            if w is not None and (not isinstance(w, str) or "{goal}" not in w):
                raise ConfigError(f"safety wrapper {label!r}={w!r} needs a '{{goal}}' placeholder (or null).")
        if self.benign_answer_column is not None and self.benign_prompts is None:
            raise ConfigError("safety.benign_answer_column needs safety.benign_prompts.")
        for name in ("max_new_tokens", "batch_size"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise ConfigError(f"safety.{name}={getattr(self, name)!r} must be a positive int.")
        if self.use_chat_template not in ("auto", True, False):
            raise ConfigError(f"safety.use_chat_template={self.use_chat_template!r}: use auto, true or false.")
        try:
            resolve_keywords(self.keywords)
        except (TypeError, ValueError) as e:
            raise ConfigError(f"safety.keywords: {e}") from None


@dataclass
class ContinualConfig:
    """A whole run. Usage: `cfg = ContinualConfig.from_yaml("tiny.yaml"); cfg.validate()`."""

    output_dir: str = "runs/continual"
    seed: int = 42
    num_tasks: int = 2  # Task 0 + (num_tasks - 1) later tasks
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    pretrain: PretrainConfig = field(default_factory=PretrainConfig)
    training: dict = field(default_factory=dict)  # TrainingArguments kwargs for every QA task
    strategies: list = field(default_factory=lambda: [StrategyConfig()])
    evaluation: EvalConfig = field(default_factory=EvalConfig)
    recovery: RecoveryConfig = field(default_factory=RecoveryConfig)
    orthogonality: OrthogonalityConfig = field(default_factory=OrthogonalityConfig)
    safety: SafetyConfig = field(default_factory=SafetyConfig)
    budget: dict | None = None  # BudgetConfig fields: a per-arm convergence budget for later tasks (None: off)

    @property
    def budget_config(self) -> "BudgetConfig | None":
        """The parsed `budget:` section (None: every arm trains the configured epochs)."""
        return None if self.budget is None else _from_dict(BudgetConfig, self.budget, "budget")

    @classmethod
    def from_dict(cls, data: dict) -> "ContinualConfig":
        """Parse a plain mapping (as loaded from YAML); `strategy:` (one) is accepted for `strategies:`."""
        if not isinstance(data, dict):
            raise ConfigError(f"config: expected a mapping at the top level, got {type(data).__name__}.")
        data = dict(data)
        if "strategy" in data:
            if "strategies" in data:
                raise ConfigError("config: give either `strategy:` or `strategies:`, not both.")
            data["strategies"] = [data.pop("strategy")]
        sections = {
            "model": ModelConfig,
            "data": DataConfig,
            "pretrain": PretrainConfig,
            "evaluation": EvalConfig,
            "recovery": RecoveryConfig,
            "orthogonality": OrthogonalityConfig,
            "safety": SafetyConfig,
        }
        for key, sub in sections.items():
            if key in data:
                data[key] = _from_dict(sub, data[key], key)
        if "strategies" in data:
            raw = data["strategies"]
            if not isinstance(raw, list) or not raw:
                raise ConfigError("strategies: expected a non-empty list of {name: seq|freeze|replay|ewc, ...}.")
            data["strategies"] = [
                _from_dict(StrategyConfig, {"name": s} if isinstance(s, str) else s, f"strategies[{i}]")
                for i, s in enumerate(raw)
            ]
        return _from_dict(cls, data, "config")

    @classmethod
    def from_yaml(cls, path: str | Path) -> "ContinualConfig":
        """Load a YAML file. Usage: `ContinualConfig.from_yaml("fastfreeze/lab/continual/configs/tiny.yaml")`."""
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file {str(path)!r} not found; pass a YAML file or use `fastfreeze demo`.")
        try:
            with open(path) as f:
                data = yaml.safe_load(f)
        except yaml.YAMLError as e:  # e.g. a !!python/object tag, which safe_load refuses
            where = getattr(e, "problem_mark", None)
            at = f" at line {where.line + 1}" if where is not None else ""
            what = getattr(e, "problem", None) or str(e).splitlines()[0]
            raise ConfigError(f"config file {str(path)!r} is not plain YAML{at}: {what}; use plain mappings, "
                              "lists, strings and numbers (no !!python tags).") from None
        except (OSError, UnicodeDecodeError) as e:
            raise ConfigError(f"config file {str(path)!r} could not be read: {e}") from None
        return cls.from_dict(data or {})

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def validate(self, num_layers: int | None = None) -> None:
        """Check every section; `num_layers` (known once a `model.path` is loaded) bounds Freeze's k."""
        if self.num_tasks < 1:
            raise ConfigError(f"num_tasks={self.num_tasks} must be >= 1 (Task 0 plus later tasks).")
        self.model.validate()
        self.data.validate()
        self.safety.validate()
        if self.model.path is not None and self.data.tokenizer == "word":
            raise ConfigError(
                "model.path is set but data.tokenizer is 'word' (a new vocabulary the model does not know); "
                "set data.tokenizer to the model's tokenizer directory (often model.path itself)."
            )
        if num_layers is None:  # a saved model's k bound is read from its config, before loading any weights
            num_layers = self.model.num_hidden_layers if self.model.path is None else saved_num_layers(self.model.path)
        labels = [s.arm for s in self.strategies]
        if len(set(labels)) != len(labels):
            raise ConfigError(f"strategies: arm names {labels} repeat; give each a distinct `label`.")
        for s in self.strategies:
            if not isinstance(s, StrategyConfig):
                raise ConfigError(f"strategies: expected StrategyConfig entries, got {s!r}.")
            s.validate(num_layers, self.num_tasks)
            if "/" in s.arm or s.arm in ("trunk", "pretrain", "baseline"):
                raise ConfigError(f"strategy label {s.arm!r} is reserved or contains '/'; pick another label.")
        if self.budget is not None:
            self.budget_config.validate(labels, self.strategies, self.training)
        ev = self.evaluation
        if ev.batch_size <= 0 or ev.dense_every <= 0 or ev.dense_until < 0:
            raise ConfigError("evaluation: batch_size and dense_every must be > 0 and dense_until >= 0.")
        check_recovery(self.recovery, self.num_tasks, labels)
        check_orthogonality(self.orthogonality, self.num_tasks, labels)
        check_training_kwargs(self.training, "training")
        check_training_kwargs(self.pretrain.training, "pretrain.training")
        check_training_kwargs(self.recovery.training, "recovery.training")


def fingerprint(*parts: Any) -> str:
    """A stable short hash of JSON-able parts: stages are skipped on resume only when it matches."""
    blob = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]
