"""Runs the reference arm (seed snippet + plain Trainer) and the fastfreeze arm side by side."""
from __future__ import annotations

import torch
from datasets import Dataset
from transformers import Trainer, TrainingArguments

from fastfreeze import FastFreezeTrainer, FreezeConfig
from fastfreeze._hf_compat import checkpointing_training_kwargs
from tests._helpers import make_model, make_rows, pad_collator, seed_snippet_freeze


class _RecordLoss:
    """Records every micro-batch training loss at full precision (Trainer's logs round to 4 digits)."""

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        out = super().compute_loss(model, inputs, return_outputs=return_outputs, num_items_in_batch=num_items_in_batch)
        loss = out[0] if return_outputs else out
        if model.training:
            self.recorded.append(loss.detach().double().item())
        return out


class RefTrainer(_RecordLoss, Trainer):
    recorded: list


class FFTrainer(_RecordLoss, FastFreezeTrainer):
    recorded: list


def training_args(out_dir: str, steps: int = 20, grad_accum: int = 2, gc: bool = False, **extra) -> TrainingArguments:
    kw = dict(output_dir=out_dir, max_steps=steps, per_device_train_batch_size=4, per_device_eval_batch_size=4,
              gradient_accumulation_steps=grad_accum, learning_rate=1e-3, weight_decay=0.01, warmup_steps=2,
              logging_steps=5, save_strategy="no", report_to=[], seed=0, data_seed=0, use_cpu=True,
              dataloader_num_workers=0, disable_tqdm=True)
    kw.update(checkpointing_training_kwargs(gc))
    kw.update(extra)
    return TrainingArguments(**kw)


def run_arm(family: str, k: int, arm: str, out_dir: str, gc: bool = False, steps: int = 20,
            padding_side: str = "right", pad_to: int | None = None, freeze_config: FreezeConfig | None = None, model=None, evaluate=True,
            rows=None, **args_extra):
    """arm: 'ref' (seed snippet + Trainer) or 'ff' (FastFreezeTrainer). Returns a dict of results."""
    model = model if model is not None else make_model(family)
    rows = rows if rows is not None else make_rows(32)
    train_ds = Dataset.from_list(rows)
    eval_ds = Dataset.from_list(make_rows(8, seed=7))
    args = training_args(out_dir, steps=steps, gc=gc, **args_extra)
    collator = pad_collator(padding_side, pad_to=pad_to)
    if arm == "ref":
        seed_snippet_freeze(model, family, k)
        trainer = RefTrainer(model=model, args=args, train_dataset=train_ds, eval_dataset=eval_ds, data_collator=collator)
    else:
        cfg = freeze_config or FreezeConfig(num_frozen_layers=k)
        trainer = FFTrainer(model=model, args=args, train_dataset=train_ds, eval_dataset=eval_ds,
                            data_collator=collator, freeze_config=cfg)
    trainer.recorded = []
    trainer.train()
    result = {"losses": trainer.recorded, "trainer": trainer, "model": model,
              "params": {n: p.detach().clone() for n, p in model.named_parameters()}}
    if evaluate:
        result["eval_loss"] = trainer.evaluate()["eval_loss"]
    return result


def max_rel_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    """max |a - b| / max(|b|), a scale-aware relative difference that does not blow up near zero."""
    return ((a.double() - b.double()).abs().max() / b.double().abs().max().clamp_min(1e-12)).item()
