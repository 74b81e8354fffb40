"""fastfreeze.lab.continual.trainers: the one place that builds trainers (FastFreezeTrainer; EWC on top)."""
from __future__ import annotations

import pytest
import torch
import transformers

from fastfreeze.lab.continual.trainers import EWCPenalty, make_trainer, training_arguments
from tests._helpers import make_model


def test_make_trainer_embedding_only_freeze(tmp_path):
    """k=0 with freeze=True freezes the embedding alone through FastFreezeTrainer's no-grad prefix."""
    model = make_model("llama")
    args = transformers.TrainingArguments(output_dir=str(tmp_path), report_to=[], use_cpu=True)
    trainer = make_trainer(model, args, None, None, num_frozen_layers=0, freeze=True)
    assert trainer.prefix is not None and trainer.freeze_report.num_frozen_layers == 0
    assert not model.model.embed_tokens.weight.requires_grad and model.model.layers[0].mlp.up_proj.weight.requires_grad
    seq = make_trainer(make_model("llama"), args, None, None, num_frozen_layers=0)
    assert seq.prefix is None


def test_ewc_penalty_is_zero_at_anchor_and_quadratic_away():
    lin = torch.nn.Linear(3, 2)
    anchor = {n: p.detach().clone() for n, p in lin.named_parameters()}
    fisher = {n: torch.full_like(p, 2.0) for n, p in lin.named_parameters()}
    pen = EWCPenalty(lin, fisher, anchor, lam=0.5)
    assert pen().item() == 0.0
    with torch.no_grad():
        lin.weight.add_(1.0)
    # 0.5 * lam * sum F * 1^2 = 0.5 * 0.5 * 2 * 6
    assert pen().item() == pytest.approx(3.0)
    lin.weight.requires_grad_(False)  # frozen parameters are not pulled back
    assert pen().item() == 0.0


def test_training_arguments_are_quiet_and_take_warmup_ratio(tmp_path):
    args = training_arguments(str(tmp_path), 7, {"learning_rate": 1e-3, "warmup_ratio": 0.1})
    assert (args.seed, args.learning_rate, args.save_strategy) == (7, 1e-3, "no")
    assert getattr(args, "warmup_ratio", None) == 0.1 or args.warmup_steps == 0.1  # by transformers version


def test_make_trainer_in_both_defaults_matches_plain_freezing(defaults, tmp_path):
    """The runner's stage trainer (the continual runner and the safety runs train through make_trainer) on one
    short task, in the CPU and the GPU defaults (Triton + fused loss), against the seed snippet + plain Trainer:
    every micro-batch loss within 2e-6 (tests/parity/test_triton_parity.py), frozen weights bitwise unchanged."""
    from datasets import Dataset

    from tests._helpers import assert_losses_close, make_rows, pad_collator, seed_snippet_freeze

    losses = {}
    for arm in ("plain", "ff"):
        model = make_model("llama")
        args = training_arguments(str(tmp_path / arm), 0, dict(max_steps=3, per_device_train_batch_size=4,
                                                                learning_rate=1e-3, use_cpu=True, logging_steps=1))
        if arm == "plain":
            seed_snippet_freeze(model, "llama", 2)
            trainer = make_trainer(model, args, Dataset.from_list(make_rows(12)), pad_collator())
        else:
            trainer = make_trainer(model, args, Dataset.from_list(make_rows(12)), pad_collator(), num_frozen_layers=2)
            assert trainer.freeze_runtime.kernel_set == ("triton" if defaults == "gpu" else "torch")
        trainer.train()
        losses[arm] = [row["loss"] for row in trainer.state.log_history if "loss" in row]
        if arm == "ff":
            initial = make_model("llama").state_dict()
            for name, p in model.named_parameters():
                if not p.requires_grad:
                    assert torch.equal(p, initial[name]), name
    assert len(losses["ff"]) == 3
    assert_losses_close(losses["ff"], losses["plain"], rtol=2e-6)
