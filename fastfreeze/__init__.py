"""fastfreeze: freeze the embedding + bottom k layers of an LLM and turn the freeze into speed and memory.

Usage:
    from fastfreeze import FastFreezeTrainer, FreezeConfig
    trainer = FastFreezeTrainer(model=model, args=args, train_dataset=ds,
                                freeze_config=FreezeConfig(num_frozen_layers=6))

How a training step flows, and where each part lives:

    batch -> (cache hit | prefix) -> boundary -> suffix -> loss

- The *prefix*: the input embedding, blocks[:k], and whatever runs wholly before block 0 or feeds the
  boundary (position embeddings, embedding norms, bare scales). `freeze.py` decides what is frozen, by
  module index and by execution order on a probe forward (never by a module's type or name); `prefix.py`
  (`FrozenPrefix`) runs it with no autograd and in eval mode, per model instance; `probe.py` proves at
  install that this fast path computes what the model's own forward computes, or refuses it. Their probe
  forwards share `trace.py` (`run_until`: the model's own forward up to one module; `eval_mode`).
- The *boundary*: the hidden state the prefix hands to block k (or to the final norm when every block is
  frozen), one [batch, seq, hidden] tensor. `prefix.py` captures it and injects it; `cache/` stores it
  per example (keys, memory store, disk store), looks it up in the collator (DataLoader workers) and
  fills it (wiring), so on a hit the prefix is not called at all.
- The *suffix*: the model's own blocks[k:], final norm and LM head, with the per-instance swaps of
  `kernels.py` (csrc_triton RMSNorm and SwiGLU, one `kernel_registry.py` entry each; forward-only variants in
  the prefix) and the fused loss
  (`csrc_triton.linear_cross_entropy`: the [tokens x vocab] logits never exist). It trains under the
  plain Trainer's autograd; nothing of it is re-implemented.
- The *loss*: the model's own (HF's ForCausalLMLoss), or the fused one with Triton kernels.

`runtime.apply_freeze` assembles them on one model: freeze (at construction), then, where the model
trains, kernels -> prefix -> probe (the probe checks the installed fast path against the model's own forward);
`step.PrefixStep` runs one training step over it (the batch planned once: cache hit, partial hit or miss),
in any loop (examples/custom_loop.py); `trainer.FreezeMixin` is the glue that wires it into
`transformers.Trainer` (and, in `integrations.trl`, TRL's SFTTrainer).
"""
from .families import UnsupportedModelError
from .config import FreezeConfig, FreezeConfigError
from .freeze import FreezeReport, freeze_bottom_layers
from .probe import ProbeReport
from .cache.store import CacheSummary
from .runtime import apply_freeze
from .trainer import FastFreezeTrainer, FreezeMixin
from ._version import __version__
from . import _moved

_moved.install()  # old lab paths (fastfreeze.continual...) fail naming the new one


def __getattr__(name):
    # TRL is optional: import the SFT trainer only when asked for.
    if name == "FastFreezeSFTTrainer":
        from .integrations.trl import FastFreezeSFTTrainer

        return FastFreezeSFTTrainer
    raise AttributeError(f"module 'fastfreeze' has no attribute {name!r}")


# The public API. FastFreezeSFTTrainer is public too (`from fastfreeze import FastFreezeSFTTrainer`) but is
# left out here: it needs TRL, and `from fastfreeze import *` must work without that optional extra.
# Everything else stays importable from its module (e.g. `fastfreeze.families.resolve`,
# `fastfreeze.runtime.FreezeRuntime`, `fastfreeze.prefix.FrozenPrefix`).
__all__ = [
    "CacheSummary", "FastFreezeTrainer", "FreezeConfig", "FreezeConfigError", "FreezeMixin", "FreezeReport",
    "ProbeReport", "UnsupportedModelError", "__version__", "apply_freeze", "freeze_bottom_layers",
]
