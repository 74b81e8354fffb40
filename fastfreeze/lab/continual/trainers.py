"""The one place that builds trainers for the runner: FastFreezeTrainer (a plain Trainer without a freeze), EWC on top."""
from __future__ import annotations

from typing import Any

import torch
from transformers import TrainingArguments

from fastfreeze._hf_compat import adapt_training_kwargs
from fastfreeze.config import FreezeConfig
from fastfreeze.trace import eval_mode
from fastfreeze.trainer import FastFreezeTrainer

def training_arguments(output_dir: str, seed: int, kwargs: dict) -> TrainingArguments:
    """TrainingArguments with quiet, save-nothing defaults (the runner checkpoints itself); `kwargs` win."""
    defaults: dict[str, Any] = dict(
        output_dir=output_dir,
        seed=seed,
        report_to="none",
        save_strategy="no",
        eval_strategy="no",
        logging_strategy="steps",
        logging_steps=100,  # progress + loss in the log; the runner keeps no other trace of training
        disable_tqdm=True,
        remove_unused_columns=False,
        dataloader_num_workers=0,
        dataloader_pin_memory=torch.cuda.is_available(),
    )
    defaults.update(kwargs)
    return TrainingArguments(**adapt_training_kwargs(defaults))


def _freeze_config(num_frozen_layers: int, freeze_embeddings: bool, cache):
    return FreezeConfig(num_frozen_layers=num_frozen_layers, freeze_embeddings=freeze_embeddings, cache=cache)


class EWCPenalty:
    """Diagonal-Fisher EWC term: lambda/2 * sum_i F_i (theta_i - theta*_i)^2 over trainable params.

    Usage: `EWCPenalty(model, fisher, anchor, lam)(model)` -> scalar tensor.
    Parameters are bound by object identity at construction, so module swaps that keep the
    Parameter objects (as FastFreezeTrainer's do) still see the right tensors.
    """

    def __init__(self, model, fisher: dict[str, torch.Tensor], anchor: dict[str, torch.Tensor], lam: float):
        self.lam = float(lam)
        self.terms = []
        for name, p in model.named_parameters():
            if name in fisher:
                self.terms.append((p, fisher[name].to(p.device), anchor[name].to(p.device)))

    def __call__(self) -> torch.Tensor:
        total = None
        for p, f, a in self.terms:
            if not p.requires_grad:
                continue
            term = (f * (p - a).pow(2)).sum()
            total = term if total is None else total + term
        if total is None:
            return torch.zeros(())
        return 0.5 * self.lam * total


def make_trainer(
    model,
    args: TrainingArguments,
    train_dataset,
    data_collator,
    callbacks=None,
    num_frozen_layers: int = 0,
    freeze_embeddings: bool = True,
    cache=None,
    ewc: EWCPenalty | None = None,
    freeze: bool | None = None,
):
    """Build the trainer for one stage. Usage: `make_trainer(model, args, ds, collator, num_frozen_layers=2).train()`.

    Always a FastFreezeTrainer: without a freeze it is a plain Trainer (SEQ); with one it freezes the
    embedding + bottom `num_frozen_layers` blocks. `freeze=True` forces the freeze even at k=0
    (embedding only); None means "k > 0". `ewc` adds the EWC penalty to compute_loss.
    """
    base = FastFreezeTrainer
    kwargs: dict[str, Any] = {}
    if freeze is None:
        freeze = num_frozen_layers > 0
    if freeze:
        kwargs["freeze_config"] = _freeze_config(num_frozen_layers, freeze_embeddings, cache)
    cls = base
    if ewc is not None:

        class EWCTrainer(base):
            """`base` with the EWC penalty added to every training loss."""

            def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
                out = super().compute_loss(model, inputs, return_outputs=return_outputs,
                                           num_items_in_batch=num_items_in_batch)
                if return_outputs:
                    loss, outputs = out
                    return loss + ewc().to(loss.device), outputs
                return out + ewc().to(out.device)

        cls = EWCTrainer
    return cls(
        model=model,
        args=args,
        train_dataset=train_dataset,
        data_collator=data_collator,
        callbacks=callbacks,
        **kwargs,
    )


def diagonal_fisher(model, dataloader, max_batches: int) -> dict[str, torch.Tensor]:
    """Empirical diagonal Fisher: mean over batches of the squared gradient of the batch loss.

    Usage: `F = diagonal_fisher(model, loader, 32)`; a per-batch (not per-example) estimate, the
    usual cheap approximation; it is what EWC needs up to a scale that lambda absorbs.
    """
    device = next(model.parameters()).device
    params = {n: p for n, p in model.named_parameters() if p.requires_grad}
    fisher = {n: torch.zeros_like(p, device="cpu") for n, p in params.items()}
    seen = 0
    with eval_mode(model):
        for batch in dataloader:
            if seen >= max_batches:
                break
            model.zero_grad(set_to_none=True)
            batch = {k: v.to(device) for k, v in batch.items() if k in ("input_ids", "attention_mask", "labels")}
            model(**batch).loss.backward()
            for n, p in params.items():
                if p.grad is not None:
                    fisher[n] += p.grad.detach().float().pow(2).cpu()
            seen += 1
        model.zero_grad(set_to_none=True)
    return {n: f / max(seen, 1) for n, f in fisher.items()}
