"""FrozenPrefix: the no-grad prefix captures the boundary, an injected boundary replaces it, remove() restores the model."""
from __future__ import annotations

import copy

import pytest
import torch
import transformers

from fastfreeze import FreezeConfig, UnsupportedModelError, apply_freeze
from fastfreeze import _patch
from fastfreeze.families import resolve
from tests._helpers import fail_the_second_stand_in, make_model


def test_boundary_flow_probe_rejects_hidden_transform():
    """Granite multiplies the embedding output by `embedding_multiplier` inside the base model's
    forward, between the embedding module and block 0. Splitting there (k=0) would feed the cache an
    unscaled boundary: the probe must refuse it. At k=1 the hand-off is direct and the split is fine."""
    cfg = transformers.GraniteConfig(vocab_size=50, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                                     intermediate_size=32, embedding_multiplier=12.0)
    model = transformers.GraniteForCausalLM(cfg)
    assert resolve(model).spec.notes == "discovered generically"
    with pytest.raises(UnsupportedModelError, match="not passed unchanged"):
        apply_freeze(model, FreezeConfig(num_frozen_layers=0))
    model = transformers.GraniteForCausalLM(cfg)
    assert apply_freeze(model, FreezeConfig(num_frozen_layers=1)).prefix is not None


def test_capture_inject_compute_boundary_and_remove():
    model = make_model("llama").eval()
    prefix = apply_freeze(model, FreezeConfig(num_frozen_layers=2, probe=False)).prefix
    ids = torch.randint(1, 90, (2, 7), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        with prefix.capture() as cap:
            ref = model(input_ids=ids).logits
        assert cap.boundary.shape == (2, 7, 32) and not cap.boundary.requires_grad
        assert torch.equal(prefix.compute_boundary(input_ids=ids), cap.boundary)  # the prefix alone
        calls = prefix.prefix_calls
        with prefix.inject(cap.boundary):
            assert torch.equal(model(input_ids=ids).logits, ref)
        assert prefix.prefix_calls == calls  # injected: the prefix did not run
        with prefix.inject(torch.zeros_like(cap.boundary)):
            assert not torch.equal(model(input_ids=ids).logits, ref)  # the injected boundary is what the suffix reads
    model.train()
    assert not model.model.layers[0].training and model.model.layers[2].training  # the prefix stays in eval mode
    prefix.remove()
    assert not [m for m in model.modules() if any(n == "forward" or n.startswith("_ff") for n in m.__dict__)]
    model.train()
    assert model.model.layers[0].training



def _count_calls(modules) -> tuple[list, list]:
    calls = []
    handles = [sub.register_forward_pre_hook(lambda m, a: calls.append(m)) for m in modules for sub in m.modules()]
    return calls, handles


def test_injected_forward_calls_no_prefix_module_and_allocates_no_placeholder():
    """A whole-batch hit swaps each prefix module for a parameter-free stand-in: none is called (no
    FSDP all-gather can happen), the embedding's stand-in output is a stride-0 view of one scalar
    (no [B, T, H] tensor), the result is the same, and the modules are back in place afterwards."""
    model = make_model("llama").eval()
    prefix = apply_freeze(model, FreezeConfig(num_frozen_layers=2, probe=False)).prefix
    ids = torch.randint(1, 90, (2, 7), generator=torch.Generator().manual_seed(0))
    before = [m for m in model.modules()]
    seen = {}
    model.model.rotary_emb.register_forward_pre_hook(lambda m, a, kw: seen.__setitem__("x", a[0] if a else kw["x"]),
                                                     with_kwargs=True)
    with torch.no_grad():
        with prefix.capture() as cap:
            ref = model(input_ids=ids).logits
        assert seen["x"].untyped_storage().nbytes() == 2 * 7 * 32 * 4  # the real embedding output
        calls, handles = _count_calls(prefix.modules)
        with prefix.inject(cap.boundary):
            got = model(input_ids=ids).logits
        assert calls == [] and torch.equal(got, ref)
        assert seen["x"].shape == (2, 7, 32) and seen["x"].untyped_storage().nbytes() == 4  # one fp32 scalar
        with prefix.inject(cap.boundary, swap=False):  # the modules are called (and return placeholders)
            assert torch.equal(model(input_ids=ids).logits, ref)
        assert len(calls) > 0 and seen["x"].untyped_storage().nbytes() == 2 * 7 * 32 * 4
        for h in handles:
            h.remove()
    assert [m for m in model.modules()] == before  # every module back in its parent


def test_partial_injection_stands_in_for_the_named_modules_only():
    """inject(only=..., fill=...) (the probe's culprit search): the named module stands in with the fill,
    the others before the boundary source run on what they are given, the source returns the boundary."""
    model = make_model("llama").eval()
    prefix = apply_freeze(model, FreezeConfig(num_frozen_layers=2, probe=False)).prefix
    ids = torch.randint(1, 90, (2, 7), generator=torch.Generator().manual_seed(0))
    seen = {}
    model.model.layers[0].register_forward_pre_hook(lambda m, a, kw: seen.__setitem__("x", a[0] if a else kw["hidden_states"]),
                                                    with_kwargs=True)
    with torch.no_grad():
        with prefix.capture() as cap:
            ref = model(input_ids=ids).logits
        calls, handles = _count_calls(prefix.modules)
        with prefix.inject(cap.boundary, only={model.model.embed_tokens}, fill=float("nan")):
            got = model(input_ids=ids).logits
        for h in handles:
            h.remove()
    assert torch.equal(got, ref) and seen["x"].isnan().all()  # layers.0 ran, on the embedding's NaN stand-in
    assert model.model.layers[0].mlp in calls  # layers.0 computed, rather than returning a placeholder
    assert not {model.model.embed_tokens, model.model.layers[1]} & set(calls)
    assert prefix.state.fill == 0.0 and prefix.state.only is None and prefix.state.injected is None  # the mode ended


def test_reference_runs_the_models_own_forward_and_records_nothing():
    """reference(): the prefix modules run the model's own forward: the same logits, and nothing
    captured, counted, timed or recorded (the probe's baseline must not leave traces)."""
    model = make_model("llama").eval()
    prefix = apply_freeze(model, FreezeConfig(num_frozen_layers=2, probe=False)).prefix
    ids = torch.randint(1, 90, (2, 7), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        with prefix.reference(), prefix.capture() as cap:
            ref = model(input_ids=ids).logits
        assert cap.boundary is None and prefix.prefix_calls == 0 and prefix.state.timings == []
        assert not any("_ff_spec" in m.__dict__ for m in prefix.modules)
        with prefix.capture() as cap:
            got = model(input_ids=ids).logits
    assert torch.equal(got, ref) and cap.boundary is not None and prefix.prefix_calls == 1


def test_standins_are_made_once_per_module():
    """Every warm step swaps in the *same* stand-in objects: torch.compile guards on the modules a
    compiled forward calls, so new ones each step would recompile each step."""
    model = make_model("llama").eval()
    prefix = apply_freeze(model, FreezeConfig(num_frozen_layers=2, probe=False)).prefix
    ids = torch.randint(1, 90, (2, 7), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        with prefix.capture() as cap:
            model(input_ids=ids)
        seen = []
        for _ in range(2):
            with prefix.inject(cap.boundary):
                seen.append([id(m) for m in model.model.layers[:2]] + [id(model.model.embed_tokens)])
                model(input_ids=ids)
    assert seen[0] == seen[1]
    assert not set(seen[0]) & {id(m) for m in prefix.modules}  # they were swapped out
    assert prefix.state.standin_calls == 2 * len(seen[0])


def test_output_forms_are_recorded_as_named_specs_through_patch():
    """Each prefix module's output form is an `OutputSpec` (fastfreeze.standin, tested there) kept as
    `_ff_spec` through `_patch` (so it follows deepcopy and remove() takes it away)."""
    model = make_model("llama").eval()
    prefix = apply_freeze(model, FreezeConfig(num_frozen_layers=2, probe=False)).prefix
    with torch.no_grad():
        model(input_ids=torch.randint(1, 90, (2, 7), generator=torch.Generator().manual_seed(0)))
    specs = [m.__dict__["_ff_spec"] for m in prefix.modules]
    assert [s.kind for s in specs] == ["fill", "pass", "pass"] and specs[0].tail == (32,)
    assert all(_patch.patched(m, "_ff_spec", "prefix") for m in prefix.modules)
    twin = copy.deepcopy(model)
    assert twin.model.layers[1].__dict__["_ff_spec"] == specs[-1]
    prefix.remove()
    assert not any("_ff_spec" in m.__dict__ for m in prefix.modules)


def test_a_swap_that_fails_halfway_is_undone_and_remove_undoes_a_swap_left_in_place(monkeypatch):
    """inject swaps prefix modules for stand-ins one by one: the second failing (injected) leaves none in
    place. A swap whose block was never exited (a generator dropped mid-step) is undone by remove()."""
    model = make_model("llama").eval()
    prefix = apply_freeze(model, FreezeConfig(num_frozen_layers=2, probe=False)).prefix
    ids = torch.randint(1, 90, (2, 7), generator=torch.Generator().manual_seed(0))
    with torch.no_grad(), prefix.capture() as cap:
        model(input_ids=ids)  # records each module's output form: every prefix module can be swapped
    originals = [model.model.embed_tokens, *model.model.layers[:2]]
    made = fail_the_second_stand_in(monkeypatch)
    with pytest.raises(RuntimeError, match="injected"), prefix.inject(cap.boundary):
        pass
    assert [model.model.embed_tokens, *model.model.layers[:2]] == originals and prefix.state.injected is None
    block = prefix.inject(cap.boundary)
    block.__enter__()  # never exited
    assert model.model.embed_tokens is not originals[0]
    prefix.remove()
    assert [model.model.embed_tokens, *model.model.layers[:2]] == originals


def test_remove_puts_modes_and_input_require_grads_back_as_they_were():
    """install() puts the prefix in eval mode and turns HF's input-require-grads hooks off (they would
    walk backward into the no-grad prefix); remove() restores each module's mode and the hooks."""
    model = make_model("llama").train()
    model.model.layers[1].mlp.eval()  # a mixed mode (a user's eval-mode submodule) comes back as it was
    model.enable_input_require_grads()
    modes = {n: m.training for n, m in model.named_modules()}
    prefix = apply_freeze(model, FreezeConfig(num_frozen_layers=2, probe=False)).prefix
    assert not model.model.layers[0].training and not model.model.embed_tokens._forward_hooks
    model.enable_input_require_grads()  # what Trainer does under gradient checkpointing: a no-op now
    assert not model.model.embed_tokens._forward_hooks
    prefix.remove()
    assert {n: m.training for n, m in model.named_modules()} == modes
    hooks = list(model.model.embed_tokens._forward_hooks.values())
    assert len(hooks) == 1 and hooks[0].__name__ == "make_inputs_require_grads"
    assert model.model.embed_tokens(torch.tensor([[1, 2, 3]])).requires_grad  # frozen, yet its output asks for grad


def test_remove_after_a_prefix_submodule_was_switched_to_train_directly():
    """A direct `submodule.train()` inside the prefix (past its always-eval train()) does not block remove()."""
    model = make_model("llama")
    prefix = apply_freeze(model, FreezeConfig(num_frozen_layers=2, probe=False)).prefix
    model.model.layers[0].mlp.train()
    prefix.remove()
    assert model.model.layers[0].mlp.training and model.model.layers[0].training and "forward" not in model.model.layers[0].__dict__
