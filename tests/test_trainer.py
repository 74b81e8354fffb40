"""FastFreezeTrainer keeps everything Trainer does working: checkpoints, resume, bf16, callbacks."""
from __future__ import annotations

import json
import os

import pytest
import torch
import transformers
from datasets import Dataset

from fastfreeze import FastFreezeTrainer, FreezeConfig, FreezeConfigError
from fastfreeze.trainer import FREEZE_CONFIG_NAME
from tests.conftest import PadCollator, make_model, make_rows
from tests.parity.harness import max_rel_diff, run_arm, training_args


def _trainer(out, model=None, k=2, steps=6, cfg=None, **extra):
    model = model or make_model("llama")
    return FastFreezeTrainer(
        model=model, args=training_args(out, steps=steps, **extra), train_dataset=Dataset.from_list(make_rows(32)),
        eval_dataset=Dataset.from_list(make_rows(8, seed=7)), data_collator=PadCollator(),
        freeze_config=cfg or FreezeConfig(num_frozen_layers=k))


def test_checkpoint_has_freeze_config_and_loads_without_fastfreeze(tmp_path):
    out = str(tmp_path / "run")
    t = _trainer(out, save_strategy="steps", save_steps=3)
    t.train()
    ckpt = os.path.join(out, "checkpoint-6")
    with open(os.path.join(ckpt, FREEZE_CONFIG_NAME)) as f:
        assert json.load(f)["num_frozen_layers"] == 2
    # A saved model is plain HF: loads with from_pretrained, no fastfreeze state inside.
    loaded = transformers.AutoModelForCausalLM.from_pretrained(ckpt)
    for n, p in t.model.named_parameters():
        assert torch.equal(loaded.get_parameter(n), p.detach()), n
    assert all(p.requires_grad for p in loaded.parameters())
    assert "forward" not in loaded.model.embed_tokens.__dict__


def test_resume_matches_uninterrupted_run_and_refuses_changed_config(tmp_path):
    full = _trainer(str(tmp_path / "full"), steps=6)
    full.train()
    out = str(tmp_path / "part")
    first = _trainer(out, steps=6, save_strategy="steps", save_steps=3)

    class StopAt3(transformers.TrainerCallback):  # an interruption after checkpoint-3, same LR schedule
        def on_step_end(self, args, state, control, **kw):
            if state.global_step == 3:
                control.should_training_stop = True

    first.add_callback(StopAt3())
    first.train()
    resumed = _trainer(out, steps=6, save_strategy="steps", save_steps=3)
    resumed.train(resume_from_checkpoint=os.path.join(out, "checkpoint-3"))
    for n, p in full.model.named_parameters():
        assert max_rel_diff(resumed.model.get_parameter(n).detach(), p.detach()) <= 1e-5, n
    assert not any(p.requires_grad for p in resumed.model.model.layers[1].parameters())

    changed = _trainer(out, steps=6, k=3, save_strategy="steps", save_steps=3)
    with pytest.raises(FreezeConfigError, match="same FreezeConfig"):
        changed.train(resume_from_checkpoint=True)
    changed_weights = [p.clone() for p in changed.model.parameters()]
    assert all(torch.equal(a, b) for a, b in zip(changed_weights, changed.model.parameters()))


def test_bf16_autocast_trains_and_keeps_frozen_bits(tmp_path):
    ref = run_arm("llama", 2, "ref", str(tmp_path / "ref"), steps=4, bf16=True, evaluate=False)
    ff = run_arm("llama", 2, "ff", str(tmp_path / "ff"), steps=4, bf16=True, evaluate=False)
    initial = make_model("llama").state_dict()
    for n, p in ff["params"].items():
        if not ff["model"].get_parameter(n).requires_grad:
            assert torch.equal(p, initial[n]), n
    # Same autocast ops on both arms: losses agree to bf16 resolution (2^-8 relative) at most.
    for a, b in zip(ff["losses"], ref["losses"]):
        assert abs(a - b) <= 2 ** -8 * abs(b)


def test_callbacks_see_fastfreeze_metrics(tmp_path):
    seen = []

    class Spy(transformers.TrainerCallback):
        def on_log(self, args, state, control, logs=None, **kw):
            seen.append(dict(logs or {}))

    t = _trainer(str(tmp_path / "o"), steps=4, cfg=FreezeConfig(num_frozen_layers=2, cache="memory"), logging_steps=1)
    t.add_callback(Spy())
    t.train()
    train_logs = [l for l in seen if "loss" in l]
    assert train_logs and all("fastfreeze/frozen_params" in l and "fastfreeze/cache_hits" in l for l in train_logs)


def test_plain_trainer_when_no_freeze_config(tmp_path):
    model = make_model("llama")
    t = FastFreezeTrainer(model=model, args=training_args(str(tmp_path / "o"), steps=2),
                          train_dataset=Dataset.from_list(make_rows(16)), data_collator=PadCollator())
    t.train()
    assert t.prefix is None and all(p.requires_grad for p in model.parameters())


def test_bad_freeze_config_type_is_refused(tmp_path):
    with pytest.raises(FreezeConfigError, match="FreezeConfig"):
        FastFreezeTrainer(model=make_model("llama"), args=training_args(str(tmp_path / "o")),
                          freeze_config={"num_frozen_layers": 2})


def test_prefix_time_saved_estimate_is_logged(tmp_path):
    t = _trainer(str(tmp_path / "o"), steps=8, cfg=FreezeConfig(num_frozen_layers=2, cache="memory"), logging_steps=2)
    t.train()
    saved = [l["fastfreeze/prefix_seconds_saved_est"] for l in t.state.log_history
             if "fastfreeze/prefix_seconds_saved_est" in l]
    # Epoch 1 (steps 1-4) runs the prefix and times it; epoch 2 reads the cache, so the estimate grows.
    assert saved and saved[-1] > 0 and saved == sorted(saved)
    assert t.prefix.seconds_per_token() > 0
