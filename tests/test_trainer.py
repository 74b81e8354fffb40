"""FastFreezeTrainer keeps everything Trainer does working: checkpoints, resume, bf16, callbacks."""
from __future__ import annotations

import json
import logging
import os

import pytest
import torch
import transformers
from datasets import Dataset

from fastfreeze import FastFreezeTrainer, FreezeConfig, FreezeConfigError
from fastfreeze.trainer import FREEZE_CONFIG_NAME
from tests._helpers import assert_losses_close, make_model, make_rows, pad_collator
from tests.parity.harness import max_rel_diff, run_arm, training_args


def _trainer(out, model=None, k=2, steps=6, cfg=None, **extra):
    model = model or make_model("llama")
    return FastFreezeTrainer(
        model=model, args=training_args(out, steps=steps, **extra), train_dataset=Dataset.from_list(make_rows(32)),
        eval_dataset=Dataset.from_list(make_rows(8, seed=7)), data_collator=pad_collator(),
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
    before = {n: p.detach().clone() for n, p in changed.model.named_parameters()}
    with pytest.raises(FreezeConfigError, match="same FreezeConfig"):
        changed.train(resume_from_checkpoint=True)
    after = dict(changed.model.named_parameters())
    assert before.keys() == after.keys()
    assert all(torch.equal(before[n], after[n].detach()) for n in before)  # nothing loaded or stepped


def test_bf16_autocast_trains_and_keeps_frozen_bits(tmp_path):
    ref = run_arm("llama", 2, "ref", str(tmp_path / "ref"), steps=4, bf16=True, evaluate=False)
    ff = run_arm("llama", 2, "ff", str(tmp_path / "ff"), steps=4, bf16=True, evaluate=False)
    initial = make_model("llama").state_dict()
    for n, p in ff["params"].items():
        if not ff["model"].get_parameter(n).requires_grad:
            assert torch.equal(p, initial[n]), n
    # Same autocast ops on both arms: losses agree to bf16 resolution (2^-8 relative) at most.
    assert_losses_close(ff["losses"], ref["losses"], rtol=2 ** -8)


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
                          train_dataset=Dataset.from_list(make_rows(16)), data_collator=pad_collator())
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


def test_model_card_and_eval_metrics_without_counters(tmp_path):
    """run_clm with the cache and evaluation during training: the model card builds (it makes one table
    from the eval rows, so their keys must agree), evaluation metrics carry no fastfreeze counters, and
    every training row has the same keys, the time-saved estimate included from the first row on."""
    out = str(tmp_path / "o")
    # 32 rows / (4 x 2) = 4 steps per epoch: epoch 2 (and every evaluation after the first) hits the cache.
    t = _trainer(out, steps=8, cfg=FreezeConfig(num_frozen_layers=2, cache="memory"), logging_steps=1,
                 eval_strategy="epoch", eval_on_start=True)
    t.train()
    metrics = t.evaluate()
    assert "eval_loss" in metrics and not [k for k in metrics if k.startswith("fastfreeze/")], metrics
    eval_rows = [r for r in t.state.log_history if "eval_loss" in r]
    train_rows = [r for r in t.state.log_history if "loss" in r]
    assert len(eval_rows) == 4 and len(train_rows) == 8
    assert not [k for r in eval_rows for k in r if k.startswith("fastfreeze/")]
    assert all(set(r) == set(train_rows[0]) for r in train_rows), [sorted(r) for r in train_rows]
    saved = [r["fastfreeze/prefix_seconds_saved_est"] for r in train_rows]
    assert saved[0] == 0.0 and saved[-1] > 0 and saved == sorted(saved)  # grows once epoch 2 reads the cache
    assert train_rows[-1]["fastfreeze/cache_hits"] > 0
    t.create_model_card()  # raised KeyError: 'Seconds Saved Est'
    with open(os.path.join(out, "README.md")) as f:
        card = f.read()
    assert "Validation Loss" in card and "fastfreeze" not in card.lower()


@pytest.fixture
def fastfreeze_log_level(monkeypatch):
    """Restore the `fastfreeze` logger and transformers' verbosity after a test that changes them."""
    import fastfreeze.trainer as ff_trainer

    ff_logger = logging.getLogger("fastfreeze")
    level, verbosity = ff_logger.level, transformers.logging.get_verbosity()
    ff_logger.setLevel(logging.NOTSET)
    monkeypatch.setattr(ff_trainer, "_level_set_by_fastfreeze", None, raising=False)
    yield
    ff_logger.setLevel(level)
    transformers.logging.set_verbosity(verbosity)


def _report_records(caplog, trainer):
    """The train-start records (fastfreeze.freeze may also log the report when the freeze is applied)."""
    return [r for r in caplog.records if r.name == "fastfreeze.trainer" and str(trainer.freeze_report) in r.getMessage()]


def test_freeze_report_logged_once_at_train_start_and_on_resume(tmp_path, caplog, fastfreeze_log_level):
    caplog.set_level(logging.INFO, logger="fastfreeze")
    out = str(tmp_path / "run")
    first = _trainer(out, steps=6, save_strategy="steps", save_steps=3, logging_steps=1)

    class StopAt3(transformers.TrainerCallback):
        def on_step_end(self, args, state, control, **kw):
            if state.global_step == 3:
                control.should_training_stop = True

    first.add_callback(StopAt3())
    assert not _report_records(caplog, first)  # not at construction: at train start
    first.train()
    assert len(_report_records(caplog, first)) == 1  # once, not per step or per log row
    assert "bottom 2 frozen" in str(first.freeze_report)
    caplog.clear()
    resumed = _trainer(out, steps=6, save_strategy="steps", save_steps=3, logging_steps=1)
    resumed.train(resume_from_checkpoint=os.path.join(out, "checkpoint-3"))
    assert len(_report_records(caplog, resumed)) == 1 and resumed.state.global_step == 6


def test_freeze_report_follows_the_run_log_level(tmp_path, caplog, fastfreeze_log_level):
    """No logging set-up for `fastfreeze` (as in HF's example scripts): `log_level="info"` shows the
    report, as it shows Trainer's own INFO lines; the default (warning) does not."""
    quiet = _trainer(str(tmp_path / "a"), steps=1)
    quiet.train()
    assert not _report_records(caplog, quiet)
    loud = _trainer(str(tmp_path / "b"), steps=1, log_level="info")
    loud.train()
    assert len(_report_records(caplog, loud)) == 1


class _CountsTo(torch.Tensor):
    """A boundary that counts how often it is moved to a device (`.to(device)`; dtype casts in the
    suffix's norms do not count)."""

    moves = 0

    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is torch.Tensor.to and ("device" in kwargs or any(isinstance(a, (torch.device, str)) for a in args[1:])):
            _CountsTo.moves += 1
        return super().__torch_function__(func, types, args, kwargs)


def test_cached_boundary_is_moved_to_the_device_once_per_step(tmp_path):
    from fastfreeze.cache.collator import BOUNDARY_KEY
    from fastfreeze.step import PLAN_KEY

    t = _trainer(str(tmp_path / "o"), steps=1, cfg=FreezeConfig(num_frozen_layers=2, cache="memory"))
    t.build_prefix_cache()
    batch = t.data_collator([t.train_dataset[i] for i in range(4)])
    assert BOUNDARY_KEY in batch  # every row cached: a hit
    boundary = batch[BOUNDARY_KEY] = batch[BOUNDARY_KEY].as_subclass(_CountsTo)
    _CountsTo.moves = 0
    inputs = t._prepare_inputs(batch)  # Trainer's device copy leaves the boundary alone ...
    assert inputs[PLAN_KEY].boundary is boundary and _CountsTo.moves == 0
    calls = t.prefix.prefix_calls
    loss = t.compute_loss(t.model, inputs)  # ... and the prefix scope moves it, once
    assert _CountsTo.moves == 1 and t.prefix.prefix_calls == calls and torch.isfinite(loss)


def test_nested_prefix_scopes_act_once(tmp_path):
    """evaluate(): prediction_step enters the prefix scope and calls compute_loss, which enters it again.
    Only the outer scope acts: each eval batch runs the prefix once and stores its rows once, then hits."""
    t = _trainer(str(tmp_path / "o"), steps=1, cfg=FreezeConfig(num_frozen_layers=2, cache="memory"))
    batches = -(-len(t.eval_dataset) // t.args.per_device_eval_batch_size)
    calls = t.prefix.prefix_calls
    t.evaluate()
    assert t.prefix.prefix_calls == calls + batches and t.prefix_cache.stored == len(t.eval_dataset)
    t.evaluate()
    assert t.prefix.prefix_calls == calls + batches and t.prefix_cache.stored == len(t.eval_dataset)
    assert t.cache_summary().hits == len(t.eval_dataset)
    seen = []
    step = t.prefix_step
    with step.run(step.plan({}), {}), step.run(step.plan({}), {}):
        seen.append(step._depth)
    assert seen == [1] and step._depth == 0


def test_checkpointing_train_turns_on_is_seen_by_the_prefix(tmp_path):
    """Trainer turns activation checkpointing on inside train(), after the freeze completed at construction:
    the step reads the mode at the run's first forward, so block k (reentrant: the first checkpointed
    segment, whose inputs come from the no-grad prefix) still trains."""
    from fastfreeze._hf_compat import checkpointing_training_kwargs

    t = _trainer(str(tmp_path / "o"), steps=1, warmup_steps=0, **checkpointing_training_kwargs(True, use_reentrant=True))
    assert t.prefix.state.boundary_requires_grad is False  # checkpointing is not on yet
    before = t.model.model.layers[2].self_attn.q_proj.weight.detach().clone()
    t.train()
    assert t.prefix.state.boundary_requires_grad is True
    assert not torch.equal(t.model.model.layers[2].self_attn.q_proj.weight, before)


def test_warm_step_calls_no_prefix_module(tmp_path):
    """Epoch 2 of a memory-cached run (32 rows, 8 a step: 4 steps an epoch): every batch is a hit and
    no prefix module (nor any submodule) is called; in epoch 1 every step called them. The trained
    weights equal the run without a cache, frozen ones bitwise."""
    from transformers import TrainerCallback

    calls, per_step = [], []

    class PerStep(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            per_step.append(len(calls))
            calls.clear()

    t = _trainer(str(tmp_path / "cached"), steps=8, cfg=FreezeConfig(num_frozen_layers=2, cache="memory"))
    for m in t.prefix.modules:
        for sub in m.modules():
            sub.register_forward_pre_hook(lambda *a: calls.append(1))
    t.add_callback(PerStep())
    t.train()
    assert len(per_step) == 8 and all(n > 0 for n in per_step[:4]) and per_step[4:] == [0] * 4, per_step
    assert t.cache_summary().hits == 32 and t.prefix.state.standin_calls > 0
    ref = _trainer(str(tmp_path / "plain"), steps=8)
    ref.train()
    for (name, p), q in zip(ref.model.named_parameters(), t.model.parameters()):
        if p.requires_grad:
            assert max_rel_diff(q, p) <= 1e-6, name  # fp32, same kernels; only the prefix's route differs
        else:
            assert torch.equal(q, p), name


def test_memory_cache_warns_under_multi_process():
    from fastfreeze.trainer import warn_memory_cache_per_process

    with pytest.warns(UserWarning, match="cache='disk'"):
        assert warn_memory_cache_per_process(FreezeConfig(num_frozen_layers=2, cache="memory"), 2)
    assert not warn_memory_cache_per_process(FreezeConfig(num_frozen_layers=2, cache="memory"), 1)
    assert not warn_memory_cache_per_process(FreezeConfig(num_frozen_layers=2, cache="disk", cache_dir="/tmp/x"), 2)


# ------------------------------------------------------------------ trainers that read outputs.logits (issue 29)
class _LogitsAccuracy:
    """A trainer that logs token accuracy from `outputs.logits` of its training forward, as custom trainers do."""

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        outputs = model(**inputs)
        preds, labels = outputs.logits[:, :-1].argmax(-1), inputs["labels"][:, 1:]
        mask = labels != -100
        self.accuracies.append(((preds == labels) & mask).sum().item() / mask.sum().item())
        self.losses.append(outputs.loss.detach().double().item())
        return (outputs.loss, outputs) if return_outputs else outputs.loss


class _PlainLogitsAccuracy(_LogitsAccuracy, transformers.Trainer):
    pass


class _FFLogitsAccuracy(_LogitsAccuracy, FastFreezeTrainer):
    pass


def test_trainer_reads_logits_names_the_method_only_where_logits_are_read():
    from fastfreeze.trainer import trainer_reads_logits
    from tests.parity.harness import FFTrainer

    assert trainer_reads_logits(FastFreezeTrainer) is None and trainer_reads_logits(FFTrainer) is None
    assert trainer_reads_logits(_FFLogitsAccuracy) == "_LogitsAccuracy.compute_loss reads outputs.logits"


def test_a_trainer_reading_logits_gets_the_fused_loss_off_with_a_note(defaults, tmp_path):
    """In the GPU defaults the fused loss would return logits=None: fastfreeze turns it off for this trainer
    (the caller's config untouched, the report says why), so the metric it logs is the plain run's."""
    from tests._helpers import seed_snippet_freeze

    runs = {}
    for arm, cls in (("ref", _PlainLogitsAccuracy), ("ff", _FFLogitsAccuracy)):
        model = make_model("llama")
        extra = {}
        if arm == "ref":
            seed_snippet_freeze(model, "llama", 2)
        else:
            extra["freeze_config"] = config = FreezeConfig(num_frozen_layers=2)
        trainer = cls(model=model, args=training_args(str(tmp_path / arm), steps=3, grad_accum=1),
                      train_dataset=Dataset.from_list(make_rows(12)), data_collator=pad_collator(), **extra)
        trainer.accuracies, trainer.losses = [], []
        trainer.train()
        runs[arm] = trainer
    ff, ref = runs["ff"], runs["ref"]
    assert config.fused_loss and not ff.freeze_runtime.config.fused_loss
    report = str(ff.freeze_report)
    assert "fused loss turned off: _LogitsAccuracy.compute_loss reads outputs.logits" in report
    assert ff.freeze_runtime.kernel_set == ("triton" if defaults == "gpu" else "torch")
    if defaults == "gpu":
        assert "Training loss: the model's own LM head" in report
    assert ff.accuracies == ref.accuracies and len(ff.accuracies) == 3
    assert_losses_close(ff.losses, ref.losses, rtol=2e-6)  # fp32; the Triton kernels reorder sums (see test_trl)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="bf16 autocast with the compiled Triton kernels needs CUDA")
def test_bf16_autocast_on_cuda_in_the_gpu_defaults(tmp_path):
    """What a GPU user gets by default: kernels="auto" -> the compiled Triton kernels, the fused loss, bf16
    autocast; against the seed snippet + Trainer under the same autocast. Run by benchmarks/gpu/suite.sh."""
    from fastfreeze.verify.report import Tolerances

    common = dict(steps=4, bf16=True, use_cpu=False, evaluate=False)
    ref = run_arm("llama", 2, "ref", str(tmp_path / "ref"), model=make_model("llama").cuda(), **common)
    ff = run_arm("llama", 2, "ff", str(tmp_path / "ff"), model=make_model("llama").cuda(), **common)
    report = ff["trainer"].freeze_report
    assert report.kernel_set == "triton" and "Training loss: fastfreeze's fused loss" in str(report)
    initial = make_model("llama").state_dict()
    for n, p in ff["params"].items():
        if not ff["model"].get_parameter(n).requires_grad:
            assert torch.equal(p.cpu(), initial[n]), n
    # fastfreeze verify's bf16 rule: kernels round once where autocast ops round several times.
    assert_losses_close(ff["losses"], ref["losses"], rtol=Tolerances.for_dtype("bf16", len(ref["losses"])).loss_rtol)
