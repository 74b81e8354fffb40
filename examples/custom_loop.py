"""A plain PyTorch training loop with fastfreeze's no-grad prefix and boundary cache, without transformers.Trainer.

`apply_freeze` freezes the embedding + bottom k blocks and installs the no-grad prefix; `PrefixStep`
(fastfreeze.step) plans each batch (cache hit, partial hit, miss) and runs its forward in one scope:
epoch 1 runs the prefix and stores each example's boundary rows, epoch 2 is served from the cache
and calls no prefix module. tests/parity/test_custom_loop_parity.py checks that this loop trains
exactly like FastFreezeTrainer with the same settings.

Usage (a tiny random Llama on the CPU, nothing downloaded):
    python examples/custom_loop.py
"""
from __future__ import annotations

import torch
from torch.utils.data import DataLoader

from fastfreeze import FreezeConfig, apply_freeze
from fastfreeze.data import IGNORE_INDEX, PaddingCollator
from fastfreeze.step import PrefixStep
from fastfreeze.testing.tiny_models import build_model, tiny_config


def train(model, rows, config: FreezeConfig, *, epochs: int = 2, batch_size: int = 4, lr: float = 1e-3,
          max_grad_norm: float = 1.0, collate=None, shuffle: bool = True, seed: int = 0, on_epoch_end=None):
    """Train `model` on `rows` (dicts of input_ids / labels) with the freeze `config`; returns the per-step
    losses (float64) and the `PrefixStep` (its counters and cache). `on_epoch_end(epoch, step)` is called
    after each epoch. The model trains where its weights are."""
    device = next(model.parameters()).device
    runtime = apply_freeze(model, config, device)
    step = PrefixStep.open(model, runtime, device)
    loader = DataLoader(rows, batch_size=batch_size, shuffle=shuffle, generator=torch.Generator().manual_seed(seed),
                        collate_fn=step.collator(collate or PaddingCollator(0)))
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr, weight_decay=0.0)
    losses = []
    model.train()
    for epoch in range(epochs):
        for batch in loader:
            plan = step.plan(batch)  # takes the cached rows out: the step moves them to the device, once
            batch = {name: value.to(device) for name, value in batch.items()}
            # The loss summed over the predicted tokens / their count (labels shift by one), as Trainer does.
            num_items = (batch["labels"][..., 1:] != IGNORE_INDEX).sum()
            with step.run(plan, batch):
                loss = model(**batch, num_items_in_batch=num_items).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), max_grad_norm)
            optimizer.step()
            optimizer.zero_grad()
            losses.append(loss.detach().double().item())
        if step.cache is not None:
            step.cache.cache.flush()  # a disk cache persists the rows stored this epoch
        if on_epoch_end is not None:
            on_epoch_end(epoch, step)
    return losses, step


def main() -> None:
    model = build_model(tiny_config("llama"), seed=0)
    g = torch.Generator().manual_seed(1)
    vocab = model.config.vocab_size
    rows = []
    for _ in range(32):
        ids = torch.randint(1, vocab, (int(torch.randint(5, 13, (1,), generator=g)),), generator=g).tolist()
        rows.append({"input_ids": ids, "labels": ids})
    config = FreezeConfig(num_frozen_layers=2, cache="memory")

    def report(epoch, step):
        print(f"epoch {epoch + 1}: prefix runs so far {step.prefix.prefix_calls}, "
              f"tokens served from the cache {step.hit_tokens}, {step.cache.cache.summary()}")

    losses, _ = train(model, rows, config, epochs=2, on_epoch_end=report)
    print("losses:", " ".join(f"{x:.4f}" for x in losses))


if __name__ == "__main__":
    main()
