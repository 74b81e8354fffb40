"""fastfreeze.step: each batch planned once (hit / partial / miss with its reason), run in one scope that owns its counters."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from fastfreeze import FreezeConfig, apply_freeze
from fastfreeze import step as step_mod
from fastfreeze.cache.collator import BOUNDARY_KEY, MISSING_KEY
from fastfreeze.step import HIT, MISS, NOT_CACHED, PARTIAL, PLAN_KEY, PrefixStep
from tests._helpers import make_model, make_rows, pad_collator

ROOT = Path(__file__).resolve().parents[1]
K, WIDTH = 2, 12  # every row padded to 12 tokens: a row's prefix output is the same bits in any batch


def _step(cache="memory"):
    model = make_model("llama")
    return model, PrefixStep.open(model, apply_freeze(model, FreezeConfig(num_frozen_layers=K, cache=cache)))


def _collate(step, rows):
    return step.collator(pad_collator(pad_to=WIDTH))(rows)


def _forward(model, step, batch, plan=None):
    plan = step.plan(batch) if plan is None else plan
    with step.run(plan, batch):
        loss = model(**batch).loss
    return plan, loss


def test_a_miss_then_a_hit_the_cache_rows_taken_out_once():
    model, step = _step()
    rows = make_rows(4)
    plan, miss_loss = _forward(model, step, _collate(step, rows))
    assert (plan.kind, plan.reason, plan.cached_rows) == (MISS, NOT_CACHED, False) and step.cache.stored == 4
    batch = _collate(step, rows)
    assert BOUNDARY_KEY in batch and MISSING_KEY not in batch
    calls = step.prefix.prefix_calls
    plan = step.plan(batch)
    assert plan.kind == HIT and plan.cached_rows and BOUNDARY_KEY not in batch  # taken out, once
    assert step.plan(batch).kind == MISS  # the batch has nothing cached left: planning it again finds nothing
    _, hit_loss = _forward(model, step, batch, plan)
    assert torch.equal(hit_loss, miss_loss) and step.prefix.prefix_calls == calls  # no prefix run
    assert step.hit_tokens == plan.hit_tokens == 4 * WIDTH and step.forwards == 2 and step.cache.stored == 4
    carried = {"input_ids": batch["input_ids"], PLAN_KEY: plan}
    assert step.plan(carried) is plan and PLAN_KEY not in carried  # a plan an earlier hook made travels as is


def test_a_partial_hit_runs_the_prefix_on_the_missing_rows_only():
    model, step = _step()
    rows = make_rows(4)
    _, _ = _forward(model, step, _collate(step, rows[:2]))  # rows 0 and 1 cached
    batch = _collate(step, rows)
    plan = step.plan(batch)
    assert plan.kind == PARTIAL and plan.missing.which == [2, 3]
    tokens = step.prefix.prefix_tokens
    _, loss = _forward(model, step, batch, plan)
    assert step.prefix.prefix_tokens - tokens == 2 * WIDTH  # the two missing rows, not the batch
    assert step.hit_tokens == plan.hit_tokens == 4 * WIDTH - plan.missing.tokens > 0 and step.cache.stored == 4
    fresh, fresh_step = _step()
    _, whole = _forward(fresh, fresh_step, _collate(fresh_step, rows))
    assert torch.equal(loss, whole)


@pytest.mark.parametrize("why", ["no cache", "sharded", "packed row"])
def test_a_partial_hit_that_cannot_be_filled_here_is_a_planned_miss(why, monkeypatch):
    model, step = _step()
    rows = make_rows(4)
    _forward(model, step, _collate(step, rows[:2]))
    batch = _collate(step, rows)
    if why == "no cache":
        step = PrefixStep(step.prefix, None, "cpu")
    elif why == "sharded":
        monkeypatch.setattr(step_mod, "several_ranks", lambda: True)
        monkeypatch.setattr(step.prefix, "sharded", lambda: True)
        monkeypatch.setattr(step_mod, "ranks_agree", lambda value, device, op: value)  # one process stands in
    else:
        monkeypatch.setattr(step_mod, "missing_inputs", lambda inputs, missing: None)
    plan = step.plan(batch)
    assert plan.kind == MISS and why in plan.reason and plan.cached_rows
    assert BOUNDARY_KEY not in batch and MISSING_KEY not in batch
    tokens, hits = step.prefix.prefix_tokens, step.hit_tokens
    _forward(model, step, batch, plan)
    assert step.prefix.prefix_tokens - tokens == 4 * WIDTH and step.hit_tokens == hits  # the whole batch ran


def test_nested_scopes_only_the_outermost_acts():
    model, step = _step()
    batch = _collate(step, make_rows(4))
    outer = step.plan(batch)
    with step.run(outer, batch):
        with step.run(step.plan(batch), batch):
            model(**batch)
            assert step._depth == 1
    assert step.forwards == 1 and step.cache.stored == 4 and step._depth == 0  # stored once, counted once


def test_the_offloaded_prefix_comes_back_only_when_it_runs():
    model, step = _step()
    rows = make_rows(4)
    _forward(model, step, _collate(step, rows))
    step.prefix.offload("cpu")
    _forward(model, step, _collate(step, rows))  # a hit: the prefix stays where it was offloaded
    assert step.prefix.offloaded
    _forward(model, step, _collate(step, make_rows(4, seed=5)))  # a miss: the prefix runs, its weights back
    assert not step.prefix.offloaded


@pytest.mark.filterwarnings("ignore:`gradient_checkpointing_:FutureWarning")  # the name transformers 5.17 knows too
def test_reentrant_checkpointing_is_read_at_the_first_forward_of_a_run():
    """Checkpointing turned on after the step was made (as Trainer.train() does) is seen by the run's first
    forward: block k, the first checkpointed segment, gets its gradients. It is read once per run."""
    model, step = _step(cache=None)
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": True})
    model.train()
    assert step.prefix.state.boundary_requires_grad is False
    _, loss = _forward(model, step, _collate(step, make_rows(4)))
    loss.backward()
    assert step.prefix.state.boundary_requires_grad is True
    assert model.model.layers[K].self_attn.q_proj.weight.grad is not None  # reentrant drops it otherwise
    model.gradient_checkpointing_disable()
    _forward(model, step, _collate(step, make_rows(4)))
    assert step.prefix.state.boundary_requires_grad is True  # not re-read every step ...
    step.new_run()
    _forward(model, step, _collate(step, make_rows(4)))
    assert step.prefix.state.boundary_requires_grad is False  # ... but at the next run's first forward


def test_ranks_agree_once_per_outermost_scope_and_only_with_a_cache(monkeypatch):
    calls = []
    monkeypatch.setattr(step_mod, "ranks_agree", lambda value, device, op: calls.append(op) or value)
    model, step = _step()
    monkeypatch.setattr(step.prefix, "sharded", lambda: True)
    batch = _collate(step, make_rows(4))
    with step.run(step.plan(batch), batch), step.run(step.plan(batch), batch):
        model(**batch)
    assert calls == ["min"]
    uncached = PrefixStep(step.prefix, None, "cpu")
    _forward(model, uncached, _collate(uncached, make_rows(4)))
    assert calls == ["min"]


def test_a_zero3_hit_that_cannot_skip_the_prefix_runs_it_without_storing_again(monkeypatch):
    model, step = _step()
    rows = make_rows(4)
    _forward(model, step, _collate(step, rows))
    monkeypatch.setattr(step_mod, "zero3_gathers_per_call", lambda prefix: True)
    step.new_run()  # the run's first forward calls every prefix module: no skipping
    calls = step.prefix.prefix_calls
    plan, _ = _forward(model, step, _collate(step, rows))
    assert plan.kind == HIT and step.prefix.prefix_calls == calls + 1 and step.hit_tokens == 0 and step.cache.stored == 4
    _forward(model, step, _collate(step, rows))  # skipped now: no prefix run, the hit counted
    assert step.prefix.prefix_calls == calls + 1 and step.hit_tokens == 4 * WIDTH


def test_a_forward_that_compiled_is_not_timed(monkeypatch):
    model, step = _step(cache=None)
    _forward(model, step, _collate(step, make_rows(4)))
    assert step.prefix.seconds_per_token() is not None
    model, step = _step(cache=None)
    events = iter(range(100))
    monkeypatch.setattr(step_mod, "compile_events", lambda: next(events))  # a compilation in every forward
    _forward(model, step, _collate(step, make_rows(4)))
    assert step.prefix.seconds_per_token() is None


def test_open_refuses_a_runtime_without_a_prefix():
    model = make_model("llama")
    runtime = apply_freeze(model, FreezeConfig(num_frozen_layers=K, freeze_embeddings=False))
    with pytest.raises(ValueError, match="No frozen prefix"):
        PrefixStep.open(model, runtime)


def test_the_step_imports_no_trainer():
    """A plain training loop uses the step: importing it (without the package's __init__, which exports the
    trainers) loads neither transformers' Trainer nor fastfreeze's."""
    code = ("import sys, types; pkg = types.ModuleType('fastfreeze'); pkg.__path__ = ['fastfreeze']; "
            "sys.modules['fastfreeze'] = pkg; import fastfreeze.step; "
            "print(sorted(m for m in ('transformers.trainer', 'fastfreeze.trainer', 'trl') if m in sys.modules))")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "[]"
