"""A decoder LM's shape for the estimates: read from a config.json (or a Hub id already in the HF cache), parameter counts per part.

Counts follow a Llama-style block (q, k, v, o projections with grouped KV heads, a gated MLP of three
matrices, two RMSNorm weights); biases and per-head norms are left out (well under 0.1% of a block).

Usage::

    shape = ModelShape.from_config("path/to/config.json", seq=2048, batch=8)
    shape.frozen_params(k=16), shape.trainable_params(k=16)
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, replace

from transformers import AutoConfig

__all__ = ["ModelShape", "load_config_dict"]

_DTYPE_BYTES = {"float32": 4, "float": 4, "bfloat16": 2, "float16": 2, "half": 2, "float64": 8}


def load_config_dict(source: str) -> dict:
    """The text-model config of `source`: a config.json path, a directory holding one, or a Hub id whose
    config is already in the local HF cache (nothing is downloaded)."""
    path = source
    if os.path.isdir(path):
        path = os.path.join(path, "config.json")
    if os.path.isfile(path):
        with open(path, encoding="utf-8") as f:
            cfg = json.load(f)
        # Class defaults (e.g. tie_word_embeddings) matter when a key is absent: let transformers fill them.
        if "model_type" in cfg:
            try:
                cfg = {**AutoConfig.for_model(**cfg).to_dict(), **cfg}
            except (ValueError, KeyError, TypeError):  # a model type this transformers does not know
                pass
    else:
        try:
            cfg = AutoConfig.from_pretrained(source, local_files_only=True).to_dict()
        except (OSError, ValueError) as err:
            raise FileNotFoundError(
                f"{source!r} is neither a config.json / model directory nor a Hub id in the local HF cache "
                f"({type(err).__name__}); pass the path of the model's config.json") from err
    text = cfg.get("text_config")
    return {**cfg, **text} if isinstance(text, dict) else cfg


def _get(cfg: dict, *names, default=None):
    for n in names:
        if cfg.get(n) is not None:
            return cfg[n]
    if default is None:
        raise ValueError(f"the model config has none of {names}; is it a decoder-only causal LM config?")
    return default


@dataclass(frozen=True)
class ModelShape:
    """What the FLOP and memory models read (`benchmarks.train.presets.Preset` extends it with a run plan)."""

    name: str
    layers: int
    hidden: int
    intermediate: int
    heads: int
    kv_heads: int
    vocab: int
    seq: int
    batch: int
    dtype: str = "bfloat16"
    tied_embeddings: bool = False

    @classmethod
    def from_config(cls, source, seq: int, batch: int, dtype: str | None = None) -> "ModelShape":
        cfg = source if isinstance(source, dict) else load_config_dict(str(source))
        heads = int(_get(cfg, "num_attention_heads", "n_head"))
        dt = dtype or str(cfg.get("torch_dtype") or cfg.get("dtype") or "bfloat16").replace("torch.", "")
        if dt not in _DTYPE_BYTES:
            raise ValueError(f"dtype {dt!r} unknown; pass one of {sorted(_DTYPE_BYTES)}")
        return cls(name=str(cfg.get("_name_or_path") or cfg.get("model_type") or "model"),
                   layers=int(_get(cfg, "num_hidden_layers", "n_layer")), hidden=int(_get(cfg, "hidden_size", "n_embd")),
                   intermediate=int(_get(cfg, "intermediate_size", "n_inner")), heads=heads,
                   kv_heads=int(_get(cfg, "num_key_value_heads", default=heads)), vocab=int(_get(cfg, "vocab_size")),
                   seq=int(seq), batch=int(batch), dtype=dt, tied_embeddings=bool(cfg.get("tie_word_embeddings", False)))

    def with_run(self, seq: int | None = None, batch: int | None = None) -> "ModelShape":
        return replace(self, seq=self.seq if seq is None else seq, batch=self.batch if batch is None else batch)

    @property
    def dtype_bytes(self) -> int:
        return _DTYPE_BYTES[self.dtype]

    def block_params(self) -> int:
        head_dim = self.hidden // self.heads
        attn = 2 * self.hidden * self.hidden + 2 * self.hidden * self.kv_heads * head_dim
        return attn + 3 * self.hidden * self.intermediate + 2 * self.hidden

    def embedding_params(self) -> int:
        return self.vocab * self.hidden

    def head_params(self) -> int:
        """The final norm, plus the LM head unless it is the (frozen) input embedding itself."""
        return self.hidden + (0 if self.tied_embeddings else self.vocab * self.hidden)

    def frozen_params(self, k: int) -> int:
        """Embedding + the bottom k blocks (what FreezeConfig(num_frozen_layers=k) freezes)."""
        self._check_k(k)
        return self.embedding_params() + k * self.block_params()

    def trainable_params(self, k: int) -> int:
        self._check_k(k)
        return (self.layers - k) * self.block_params() + self.head_params()

    def _check_k(self, k: int) -> None:
        if not 0 <= k <= self.layers:
            raise ValueError(f"k={k} is outside 0..{self.layers} (the model's decoder layers)")
