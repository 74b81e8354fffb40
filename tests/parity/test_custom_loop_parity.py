"""examples/custom_loop.py (a plain PyTorch loop over fastfreeze.step) trains exactly like FastFreezeTrainer, epoch 2 from the cache."""
from __future__ import annotations

import runpy
from pathlib import Path

import torch
from datasets import Dataset

from fastfreeze import FreezeConfig
from tests._helpers import make_model, make_rows, pad_collator
from tests.parity.harness import FFTrainer, training_args

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "custom_loop.py"
ROWS, BATCH, EPOCHS, K = 16, 4, 2, 2


def _loop_arm(cfg: FreezeConfig) -> dict:
    example = runpy.run_path(str(EXAMPLE), run_name="custom_loop")  # not __main__: defines train() only
    model = make_model("llama")
    prefix_modules = [model.model.embed_tokens, *model.model.layers[:K]]
    calls = [0]
    hooks = [m.register_forward_pre_hook(lambda *_: calls.__setitem__(0, calls[0] + 1)) for m in prefix_modules]
    per_epoch = []
    losses, step = example["train"](model, make_rows(ROWS), cfg, epochs=EPOCHS, batch_size=BATCH,
                                    collate=pad_collator(pad_to=12), shuffle=False,
                                    on_epoch_end=lambda epoch, s: per_epoch.append((calls[0], s.prefix.prefix_calls)))
    for h in hooks:
        h.remove()
    return {"losses": losses, "model": model, "step": step, "per_epoch": per_epoch}


def _trainer_arm(cfg: FreezeConfig, out_dir: str) -> dict:
    model = make_model("llama")
    # The loop's settings in Trainer's words: batches in order, one micro-batch a step, constant lr, AdamW
    # without weight decay, gradients clipped to norm 1.
    args = training_args(out_dir, steps=-1, grad_accum=1, num_train_epochs=EPOCHS, per_device_train_batch_size=BATCH,
                         warmup_steps=0, weight_decay=0.0, lr_scheduler_type="constant", optim="adamw_torch",
                         max_grad_norm=1.0, train_sampling_strategy="sequential", logging_steps=100)
    trainer = FFTrainer(model=model, args=args, train_dataset=Dataset.from_list(make_rows(ROWS)),
                        data_collator=pad_collator(pad_to=12), freeze_config=cfg)
    trainer.recorded = []
    trainer.train()
    return {"losses": trainer.recorded, "model": model, "trainer": trainer}


def test_custom_loop_trains_exactly_like_the_trainer_and_epoch_2_hits(tmp_path):
    cfg = FreezeConfig(num_frozen_layers=K, cache="memory")
    before = {n: p.detach().clone() for n, p in make_model("llama").named_parameters()}
    loop, ref = _loop_arm(cfg), _trainer_arm(cfg, str(tmp_path / "o"))
    steps = EPOCHS * ROWS // BATCH
    # Same ops on the same batches in the same order, fp32 on the CPU: no tolerance.
    assert len(loop["losses"]) == len(ref["losses"]) == steps and loop["losses"] == ref["losses"]
    trained = {n: p for n, p in ref["model"].named_parameters()}
    for name, p in loop["model"].named_parameters():
        assert torch.equal(p, trained[name]), name  # trainable and frozen alike, bitwise
        if p.requires_grad:
            assert not torch.equal(p, before[name]), f"{name} did not train"
        else:
            assert torch.equal(p, before[name]), f"frozen {name} changed"
    # Epoch 1 ran the prefix on every batch (and stored every row); epoch 2 was served from the cache and
    # called no prefix module at all (each one was swapped out for its stand-in).
    (modules_1, runs_1), (modules_2, runs_2) = loop["per_epoch"]
    # (module calls count from before apply_freeze, whose install-time checks call them too)
    assert runs_1 == ROWS // BATCH and modules_1 >= runs_1 * (K + 1)
    assert runs_2 == runs_1 and modules_2 == modules_1
    assert loop["step"].hit_tokens == ref["trainer"].prefix_step.hit_tokens > 0
    assert loop["step"].cache.cache.summary().hits == ref["trainer"].cache_summary().hits == ROWS
