"""FreezeConfig: the validated knobs of a fastfreeze run (what to freeze, which kernels, which cache)."""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from typing import Any

KERNEL_CHOICES = ("auto", "triton", "torch")
# The per-op kernel switches (bool fields): one per op of fastfreeze.kernel_registry, plus the fused loss.
KERNEL_SWITCHES = ("rms_norm", "swiglu", "fused_loss")
# The boundary-cache backends FreezeConfig(cache=<kind>) can name. Each fastfreeze.cache.PrefixCache subclass
# that sets its own `kind` enters itself here when its class is defined (memory, disk, or a third one:
# docs/extending.md), so a new backend is its class and nothing else. Lives here, not in cache/, because the
# config validates against it and sits below the cache in the layers.
CACHE_BACKENDS: dict[str, type] = {}

# Keys that decide what the model *is* after freezing; a resumed run must match them exactly.
# Runtime-only knobs (kernels, cache location) may change between runs without changing results.
_IDENTITY_KEYS = ("num_frozen_layers", "freeze_embeddings", "untie_embeddings")
# Fields that earlier versions saved into every checkpoint's freeze config but nothing ever read: a saved
# config that has them still loads (they are dropped), so old checkpoints stay resumable.
_RETIRED_KEYS = ("extra",)


class FreezeConfigError(ValueError):
    """A FreezeConfig value is invalid, or does not fit the model or the checkpoint."""


@dataclass
class FreezeConfig:
    """What to freeze and how to run the frozen prefix.

    Usage:
        FreezeConfig(num_frozen_layers=6)                      # embedding + layers[:6] frozen
        FreezeConfig(num_frozen_layers=6, cache="disk", cache_dir="/tmp/ffcache")

    Args:
        num_frozen_layers: k, how many bottom decoder blocks to freeze (0 freezes only the embedding).
        freeze_embeddings: also freeze the input embedding (the paper's recipe). With it off and k > 0
            the frozen blocks are no longer a prefix (gradients must cross them to reach the
            embedding), so they are frozen plainly, without the no-grad fast path or the cache.
        untie_embeddings: when the LM head shares the embedding matrix, give the head its own copy
            so it can train while the embedding stays frozen (the saved model is then untied).
        kernels: "auto" (Triton on CUDA, torch ops on CPU), "triton" or "torch".
        cache: None, "memory" or "disk": reuse the prefix's output (the boundary hidden state) per example.
        cache_dir: where a disk cache lives (required for cache="disk").
        cache_max_bytes: upper bound on the cache's data bytes (on disk, or in memory). Past it the cache
            stops adding entries (nothing is evicted), warns once, and keeps serving what it holds; the
            rest runs through the prefix every time. `fastfreeze estimate` gives the size a dataset needs.
        offload_prefix: with a cache, `build_prefix_cache()` moves prefix weights off the accelerator when it
            leaves every training example cached (a lazily filled cache never does; they come back for a miss).
        rms_norm, swiglu, fused_loss: the per-op kernel switches, read only with Triton kernels (on CUDA):
            False leaves that op on torch, to bisect a difference one op at a time (the report lists what
            was switched off). rms_norm: the RMSNorm kernel; swiglu: the SwiGLU MLP kernel; fused_loss:
            compute the LM-head loss chunked (logits never materialized; training forwards with labels then
            return `logits=None`), off for trainers that read `outputs.logits` while training. None of
            them changes results beyond rounding, so a resumed run may change them.
        probe: at install, prove on a tiny probe batch that the fast path (computed prefix, and an
            injected boundary as on a cache hit) gives the same logits and trainable gradients as the
            model's own forward with the same freeze; refuse the fast path or the cache otherwise
            (`fastfreeze.probe`). Costs a few forward/backward passes of 16 tokens; turn off only for
            a model you have already verified, since nothing else checks an unknown architecture.
        allow_eval_prefix: the prefix always runs in eval mode (deterministic, so it can be cached). If
            the frozen layers are stochastic in training (dropout, router jitter), plain freezing would
            keep that noise, so the probe refuses; True accepts the eval-mode prefix knowingly (noted in
            the report).
    """

    num_frozen_layers: int
    freeze_embeddings: bool = True
    untie_embeddings: bool = False
    kernels: str = "auto"
    cache: str | None = None
    cache_dir: str | None = None
    cache_max_bytes: int | None = None
    offload_prefix: bool = True
    fused_loss: bool = True
    probe: bool = True
    allow_eval_prefix: bool = False
    rms_norm: bool = True  # after the older fields, so positional arguments keep their meaning
    swiglu: bool = True

    def __post_init__(self) -> None:
        k = self.num_frozen_layers
        if isinstance(k, bool) or not isinstance(k, int):
            raise FreezeConfigError(f"num_frozen_layers must be an int, got {k!r}.")
        if k < 0:
            raise FreezeConfigError(
                f"num_frozen_layers={k} is negative; use 0 to freeze only the embedding, or k > 0 to also "
                "freeze the bottom k decoder layers."
            )
        if self.kernels not in KERNEL_CHOICES:
            raise FreezeConfigError(f"kernels={self.kernels!r}; choose one of {KERNEL_CHOICES}.")
        for switch in KERNEL_SWITCHES:
            if not isinstance(getattr(self, switch), bool):
                raise FreezeConfigError(
                    f"{switch}={getattr(self, switch)!r}: a per-op kernel switch is True or False "
                    f"(FreezeConfig({switch}=False) leaves that op on torch).")
        if self.cache is not None and self.cache not in CACHE_BACKENDS:
            kinds = ", ".join(repr(k) for k in CACHE_BACKENDS)
            raise FreezeConfigError(f"cache={self.cache!r}; choose one of None, {kinds} (a new backend: a "
                                    "fastfreeze.cache.PrefixCache subclass with its own `kind`, docs/extending.md).")
        if self.cache == "disk" and not self.cache_dir:
            raise FreezeConfigError("cache='disk' needs cache_dir=<a writable directory>.")
        if self.cache_max_bytes is not None and self.cache_max_bytes <= 0:
            raise FreezeConfigError(f"cache_max_bytes={self.cache_max_bytes} must be positive (or None for no bound).")
        if self.cache is not None and not self.is_prefix:
            raise FreezeConfigError(
                "A prefix cache needs a frozen prefix: set freeze_embeddings=True (the frozen layers sit on "
                "top of a trainable embedding otherwise, so their output changes every step)."
            )

    @property
    def is_prefix(self) -> bool:
        """True when the frozen modules form a prefix of the network (embedding + bottom blocks)."""
        return self.freeze_embeddings

    def validate_for(self, num_layers: int) -> None:
        """Check k against the model's depth (k == num_layers leaves the final norm and head to train)."""
        if self.num_frozen_layers > num_layers:
            raise FreezeConfigError(
                f"num_frozen_layers={self.num_frozen_layers} but the model has {num_layers} decoder layers; "
                f"use a value in 0..{num_layers}."
            )

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "FreezeConfig":
        names = {f.name for f in dataclasses.fields(cls)}
        data = {k: v for k, v in data.items() if k not in _RETIRED_KEYS}
        unknown = set(data) - names
        if unknown:
            raise FreezeConfigError(f"Unknown FreezeConfig fields {sorted(unknown)}; known: {sorted(names)}.")
        return cls(**data)

    def identity(self) -> dict[str, Any]:
        """The fields that define the frozen model (compared on resume)."""
        return {k: getattr(self, k) for k in _IDENTITY_KEYS}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)
