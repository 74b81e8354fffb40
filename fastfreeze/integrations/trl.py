"""FastFreezeSFTTrainer: TRL's `SFTTrainer` with the same frozen, no-grad, cacheable prefix as FastFreezeTrainer.

One implementation: the freeze lives in `fastfreeze.trainer.FreezeMixin`, which this class puts in
front of `trl.SFTTrainer`. What SFT adds on top of a plain Trainer is handled as follows:

- activation checkpointing (on by default in SFTConfig): the prefix is outside every checkpointed
  segment of the suffix, so nothing frozen is recomputed (see `fastfreeze.prefix`);
- completion-only / assistant-only loss and TRL's fused LM head: they only change the labels and the
  head, never the prefix's input, so cached boundaries stay valid;
- padding-free / packing: TRL's collator then returns one flattened row per batch with
  `position_ids` restarting at each document and no `attention_mask`. The cache splits that row at
  its document starts and keys each document by its own token ids and position ids, so a document
  is stored once and served whatever it is packed with, at any batch size and in any order (epoch 2
  of a shuffled run hits every document). That is exact because the attention keeps packed
  documents apart; the cache checks it when it opens (`fastfreeze.cache.packing`: a packed probe row
  vs its documents alone) and, where it fails, keys each flattened row whole (hits then need the
  same batch again) and refuses `build_prefix_cache` for multi-example packed batches. A batch
  with some documents cached runs the prefix for the missing ones only (see `fastfreeze.cache.segments`).

Needs `trl` (`pip install fastfreeze[trl]`).

Usage:
    from fastfreeze import FastFreezeSFTTrainer   # or fastfreeze.integrations.trl
    trainer = FastFreezeSFTTrainer(model=model, args=SFTConfig(...), train_dataset=ds,
                                   processing_class=tokenizer,
                                   freeze_config=FreezeConfig(num_frozen_layers=6, cache="memory"))
    trainer.train()
"""
from __future__ import annotations

try:
    from trl import SFTTrainer
except ImportError as err:  # an optional extra: say how to get it
    raise ImportError(
        "fastfreeze.integrations.trl needs TRL, which is not installed: `pip install fastfreeze[trl]` (or `pip install trl`)."
    ) from err

import logging

from transformers import set_seed

from .._hf_compat import sft_padding_free, trl_fused_lm_head, trl_load_model
from ..config import FreezeConfig, FreezeConfigError
from ..trainer import FreezeMixin
from .peft import restrict_to_suffix

__all__ = ["FastFreezeSFTTrainer"]

logger = logging.getLogger(__name__)


class FastFreezeSFTTrainer(FreezeMixin, SFTTrainer):
    """`trl.SFTTrainer` with the embedding + bottom k blocks frozen and run as a no-grad (cacheable) prefix.

    Accepts everything SFTTrainer accepts, plus `freeze_config` (None: a plain SFTTrainer). With
    `peft_config=`, the adapter is applied before the freeze. A config whose target modules also sit in
    the frozen blocks (TRL's `--use_peft --lora_target_modules q_proj v_proj` targets every block) is
    narrowed to blocks k..L-1 with `layers_to_transform`, with a logged warning saying so
    (`fastfreeze.integrations.peft.restrict_to_suffix`); a `layers_to_transform` that includes frozen
    blocks, targets on the embedding, and a PeftModel with adapters in the prefix are refused.

    Usage:
        FastFreezeSFTTrainer(model=model, args=SFTConfig(output_dir="out"), train_dataset=ds,
                             processing_class=tok, freeze_config=FreezeConfig(num_frozen_layers=6)).train()
    """

    def __init__(self, model=None, args=None, *rest, freeze_config: FreezeConfig | None = None,
                 peft_config=None, **kwargs):
        if rest:
            raise TypeError("FastFreezeSFTTrainer takes `model` and `args` positionally; pass the rest by keyword.")
        if freeze_config is not None and model is not None:
            if isinstance(model, str):
                if args is None:
                    raise FreezeConfigError(
                        "FastFreezeSFTTrainer(model=<id>) with a freeze needs `args=SFTConfig(...)` to load the model.")
                # SFTTrainer accepts a model id; the freeze needs the instance first: load it as TRL does.
                # SFTTrainer would only warn that a quantization_config beside a loaded model is ignored.
                model = trl_load_model(model, args, kwargs.pop("quantization_config", None))
            if peft_config is not None:
                # SFTTrainer would wrap the model after our freeze; wrap first so the adapter placement is
                # validated against the prefix. Seeding first gives the adapter init SFTTrainer would give.
                from peft import get_peft_model

                if freeze_config.is_prefix:
                    # TRL's --use_peft --lora_target_modules ... targets every block: keep the adapters on the
                    # trainable blocks (the prefix runs without autograd), and say so.
                    peft_config, note = restrict_to_suffix(peft_config, model, freeze_config.num_frozen_layers)
                    if note:
                        logger.warning(note)
                set_seed(args.seed if args is not None else 42)
                model = get_peft_model(model, peft_config)
                peft_config = None
        super().__init__(model=model, args=args, freeze_config=freeze_config, peft_config=peft_config, **kwargs)

    def _reads_logits(self) -> str | None:
        # TRL >= 1.16 scores training batches with its fused LM head (the kernels report names it); without
        # one (older TRL), SFTTrainer computes mean_token_accuracy and entropy from outputs.logits.
        if not trl_fused_lm_head(self.freeze_runtime.target):
            return "SFTTrainer without TRL's fused LM head (TRL < 1.16) computes its token accuracy from outputs.logits"
        return super()._reads_logits()

    def build_prefix_cache(self, dataset=None, batch_size: int | None = None) -> dict:
        """See `FreezeMixin.build_prefix_cache`. Padding-free / packed batches are keyed per document,
        so the precompute serves any training batch; only where the packed-document check refused that
        (whole flattened rows are keyed) does it need one example per batch.

        Usage:
            trainer.build_prefix_cache(); trainer.train()
        """
        runtime = self.prefix_cache
        if sft_padding_free(self) and runtime is not None and not runtime.split_documents:
            if self.args.per_device_train_batch_size != 1 or (batch_size or 1) != 1:
                raise FreezeConfigError(
                    "build_prefix_cache with padding-free / packed batches: per-document cache entries were refused "
                    f"({runtime.packed_refusal}), so the cache keys one flattened batch and precomputed entries only "
                    "match training batches of one (packed) example. Use per_device_train_batch_size=1 (with "
                    "packing=True), or skip the precompute and let the cache fill lazily, or set padding_free=False "
                    "and packing=False."
                )
            batch_size = 1
        return super().build_prefix_cache(dataset, batch_size=batch_size)
