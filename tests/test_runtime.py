"""apply_freeze: validates the config against the model, freezes, probes, installs kernels and the prefix; a refusal leaves the model as it came."""
from __future__ import annotations

import pytest
import torch
import transformers
from datasets import Dataset

from fastfreeze import FastFreezeTrainer, FreezeConfig, FreezeConfigError, UnsupportedModelError, apply_freeze
from fastfreeze import runtime as runtime_mod
from fastfreeze.runtime import complete_freeze, prepare_freeze
from tests._helpers import FAMILY_CONFIGS, fail_the_second_stand_in, lora_model, make_model, make_rows, pad_collator
from tests.parity.harness import RefTrainer, training_args


def test_k_larger_than_depth():
    with pytest.raises(FreezeConfigError, match="0..4"):
        apply_freeze(make_model("llama"), FreezeConfig(num_frozen_layers=5))


def test_freeze_embeddings_false_is_plain_freeze():
    model = make_model("llama")
    rt = apply_freeze(model, FreezeConfig(num_frozen_layers=2, freeze_embeddings=False))
    assert rt.prefix is None and model.model.embed_tokens.weight.requires_grad
    assert not any(p.requires_grad for p in model.model.layers[1].parameters())


def _zero3_engine_model():
    """A model marked as a ZeRO-3 engine leaves it (its data stays whole, so forwards run on CPU)."""
    model = make_model("llama")
    model.model.layers[3].mlp.up_proj.weight.ds_id = 7  # a partitioned weight (zero.Init)
    model.model.ds_recompute_parameters = set()  # the engine hooked the modules (deepspeed.initialize)
    return model


@pytest.mark.parametrize("kernels", ["auto", "triton"])
def test_zero3_engine_installs_the_triton_kernels_as_asked(monkeypatch, kernels):
    """Under a ZeRO-3 engine the Triton kernels install like anywhere else (their install check gathers the
    module it checks; tests/integrations/test_deepspeed.py trains them on partitioned weights), whether
    asked for explicitly or picked by "auto" on a GPU; the report says how they read partitioned weights."""
    model = _zero3_engine_model()
    runtime = prepare_freeze(model, FreezeConfig(num_frozen_layers=2, kernels=kernels))
    monkeypatch.setattr(runtime_mod, "choose_kernel_set", lambda *a, **k: ("triton", None))  # as on a GPU
    complete_freeze(runtime, torch.device("cpu"))
    assert runtime.kernel_set == runtime.report.kernel_set == "triton"
    assert model.model.layers[3].mlp.forward.__name__ == "_swiglu_split"
    assert runtime_mod.ZERO3_KERNELS_NOTE in runtime.report.notes
    assert any(n.startswith("DeepSpeed ZeRO-3: prefix trace and probe ran at train start") for n in runtime.report.notes)


def test_triton_kernels_survive_transformers_hub_rekernelization(tmp_path, monkeypatch):
    """transformers 5.25 + the `kernels` package: from_pretrained turns hub kernelization on, and every train()/
    eval() mode change re-kernelizes, resetting the forward of hub-decorated modules (LlamaRMSNorm) to the
    class's. The Triton set-up turns it off (a note), so the RMSNorm kernels still run after train()/eval();
    teardown turns it back on."""
    import csrc_triton
    from fastfreeze import _hf_compat

    make_model("llama").save_pretrained(tmp_path / "tiny")
    model = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "tiny", attn_implementation="eager")
    if not getattr(model, "use_kernels", False):
        pytest.skip("this transformers / kernels pair does not turn hub kernels on in from_pretrained")
    runtime = apply_freeze(model, FreezeConfig(num_frozen_layers=2, kernels="triton"))
    assert runtime_mod.HUB_KERNELS_NOTE in runtime.report.notes and not model.use_kernels
    calls = []
    monkeypatch.setattr(csrc_triton, "rms_norm", lambda *a, _f=csrc_triton.rms_norm, **k: calls.append(1) or _f(*a, **k))
    model.eval()
    model.train()  # what Trainer does every step
    model(**pad_collator()(make_rows(2)))
    assert len(calls) == 9  # 2 per block + the final norm: none reset to torch
    mode = runtime.hub_kernels_mode
    runtime.teardown()
    assert model.use_kernels and model.kernels_mode == mode and _hf_compat.hub_kernels_off(model) == mode


# ------------------------------------------------------------------ a refusal leaves the model as it came
def _dropout_llama():
    """Attention dropout in the frozen blocks: the probe refuses (the prefix would draw random numbers)."""
    cfg = FAMILY_CONFIGS["llama"][0]()
    cfg.attention_dropout = 0.1
    torch.manual_seed(0)
    model = transformers.LlamaForCausalLM(cfg)
    model.config._attn_implementation = "eager"
    return model


def _llama_reading_the_embedding(model=None):
    """Like Zamba2's hybrid blocks: block 2's output gets the word-embedding output added, so the suffix
    reads a tensor made inside the prefix besides the boundary, and the cache check refuses."""
    model, seen = model if model is not None else make_model("llama"), {}

    def keep(module, args, out):
        seen["embedding"] = out

    def add(module, args, out):
        return (out[0] + seen["embedding"], *out[1:]) if isinstance(out, tuple) else out + seen["embedding"]

    model.model.embed_tokens.register_forward_hook(keep)
    model.model.layers[2].register_forward_hook(add)
    return model


def _lora_reading_the_embedding():
    """The same on a PEFT LoRA model with HF's input-require-grads hooks on (gradient checkpointing with
    adapters): install turns them off, teardown back on (registered last again, as here)."""
    model = lora_model()
    _llama_reading_the_embedding(model.get_base_model())
    model.enable_input_require_grads()
    return model


# case -> (model builder, FreezeConfig arguments, what the refusal says)
REFUSALS = {
    "probe": (_dropout_llama, {}, "draw random numbers"),
    "cache": (_llama_reading_the_embedding, {"cache": "memory"}, r"cache refused.*model\.embed_tokens"),
    "swap": (lambda: make_model("llama"), {"cache": "memory"}, "cache refused"),
    "peft": (_lora_reading_the_embedding, {"cache": "memory"}, r"cache refused.*model\.embed_tokens"),
}


def _same(x, y) -> bool:
    """Equal as parts of a module's state: tensors bitwise (with dtype, shape, requires_grad), submodules
    by type (each is compared under its own name), hook dicts by their hooks (their keys are a
    process-wide counter), functions by code (two builds make two closures)."""
    if isinstance(x, torch.Tensor) or isinstance(y, torch.Tensor):
        if not (type(x) is type(y) and (x.dtype, x.shape, x.requires_grad) == (y.dtype, y.shape, y.requires_grad)):
            return False
        return torch.equal(x.detach().reshape(-1).view(torch.uint8), y.detach().reshape(-1).view(torch.uint8)) \
            if x.is_floating_point() else torch.equal(x, y)
    if isinstance(x, torch.nn.Module) or isinstance(y, torch.nn.Module):
        return type(x) is type(y)
    if isinstance(x, dict) and isinstance(y, dict):
        if all(isinstance(k, int) for k in [*x, *y]):
            return len(x) == len(y) and all(_same(a, b) for a, b in zip(x.values(), y.values()))
        return x.keys() == y.keys() and all(_same(x[k], y[k]) for k in x)
    if isinstance(x, (list, tuple)) and type(x) is type(y):
        return len(x) == len(y) and all(_same(a, b) for a, b in zip(x, y))
    if hasattr(x, "__func__") and hasattr(y, "__func__"):  # bound methods: the function and whose
        return _same(x.__func__, y.__func__) and type(x.__self__) is type(y.__self__)
    if hasattr(x, "__code__") and hasattr(y, "__code__"):
        return x.__code__ is y.__code__
    if isinstance(x, torch.utils.hooks.RemovableHandle):
        return type(x) is type(y)
    return type(x) is type(y) and x == y


def assert_as_it_came(model, untouched) -> None:
    """Every module's `__dict__` (instance forwards and patch records, training mode, parameters bitwise
    with requires_grad, buffers, hooks) equals that of a model never handed to fastfreeze."""
    ours, theirs = dict(model.named_modules(remove_duplicate=False)), dict(untouched.named_modules(remove_duplicate=False))
    assert ours.keys() == theirs.keys()
    extra = {n: sorted(ours[n].__dict__.keys() ^ theirs[n].__dict__.keys()) for n in ours}
    assert not {n: k for n, k in extra.items() if k}, "attributes fastfreeze left (or took away)"
    differ = [f"{n}.{k}" for n in ours for k in ours[n].__dict__ if not _same(ours[n].__dict__[k], theirs[n].__dict__[k])]
    assert not differ
    state, ref = model.state_dict(keep_vars=True), untouched.state_dict(keep_vars=True)
    assert state.keys() == ref.keys() and all(_same(state[k], ref[k]) for k in ref)


_PLAIN_RUNS: dict = {}


def _plain_run(model, out: str):
    """A plain `transformers.Trainer` run, no freeze (what a refused user falls back to): every
    micro-batch loss at full precision and the final weights."""
    args = training_args(out, steps=3, grad_accum=1, per_device_train_batch_size=4, logging_steps=1)
    trainer = RefTrainer(model=model, args=args, train_dataset=Dataset.from_list(make_rows(12)),
                         data_collator=pad_collator())
    trainer.recorded = []
    trainer.train()
    return trainer.recorded, {k: v.detach().clone() for k, v in model.state_dict().items()}


def _assert_trains_like_untouched(case: str, model, tmp_path) -> None:
    if case not in _PLAIN_RUNS:
        _PLAIN_RUNS[case] = _plain_run(REFUSALS[case][0](), str(tmp_path / "untouched"))
    losses, weights = _plain_run(model, str(tmp_path / "refused"))
    ref_losses, ref_weights = _PLAIN_RUNS[case]
    assert losses == ref_losses  # bitwise: the same ops on the same CPU
    assert weights.keys() == ref_weights.keys() and all(torch.equal(weights[k], ref_weights[k]) for k in ref_weights)


def _refused(case: str, tmp_path, **config):
    """(the model a FastFreezeTrainer refused, the same model handed to a plain Trainer instead: Trainer's own
    set-up changes the model too, e.g. config.use_cache)"""
    build, extra, says = REFUSALS[case]
    model, untouched = build(), build()
    args = training_args(str(tmp_path / "ff"), steps=1, grad_accum=1)
    data = dict(train_dataset=Dataset.from_list(make_rows(8)), data_collator=pad_collator())
    with pytest.raises(UnsupportedModelError, match=says):
        FastFreezeTrainer(model=model, args=args, **data,
                          freeze_config=FreezeConfig(num_frozen_layers=2, **extra, **config))
    transformers.Trainer(model=untouched, args=args, **data)
    return model, untouched


@pytest.mark.parametrize("kernels", ["torch", "triton"])
@pytest.mark.parametrize("case", ["probe", "cache"])
def test_a_refused_model_is_left_as_it_came(case, kernels, tmp_path):
    """Refused by the probe (dropout in the prefix) or by the cache check (the suffix reads the embedding),
    after the kernels (triton: interpreted on CPU) and the prefix were installed: nothing of them stays,
    and a plain Trainer run from the model equals one from a model never handed to fastfreeze."""
    model, untouched = _refused(case, tmp_path, kernels=kernels)
    assert_as_it_came(model, untouched)
    _assert_trains_like_untouched(case, model, tmp_path)


def test_a_failure_halfway_through_a_swap_leaves_the_model_as_it_came(monkeypatch, tmp_path):
    """The probe's cache check swaps prefix modules for stand-ins; the second stand-in fails to build
    (injected), with the first already in place. The check counts that as a refusal of the cache."""
    made = fail_the_second_stand_in(monkeypatch)
    model, untouched = _refused("swap", tmp_path)
    assert len(made) >= 2
    assert_as_it_came(model, untouched)
    _assert_trains_like_untouched("swap", model, tmp_path)


def test_an_error_after_the_freeze_leaves_the_model_as_it_came(monkeypatch, tmp_path):
    """Trainer's own set-up fails (injected) after prepare_freeze froze the model: the freeze is undone."""
    def fail(self):
        raise RuntimeError("injected: Trainer's set-up fails")

    monkeypatch.setattr(transformers.Trainer, "create_accelerator_and_postprocess", fail)
    model = make_model("llama")
    with pytest.raises(RuntimeError, match="injected"):
        FastFreezeTrainer(model=model, args=training_args(str(tmp_path), steps=1),
                          freeze_config=FreezeConfig(num_frozen_layers=2))
    assert_as_it_came(model, make_model("llama"))


def test_a_refusal_after_untie_embeddings_ties_the_head_again():
    def tied_dropout_llama():
        model = _dropout_llama()
        model.config.tie_word_embeddings = True
        model.tie_weights()
        return model

    model = tied_dropout_llama()
    with pytest.raises(UnsupportedModelError, match="draw random numbers"):
        apply_freeze(model, FreezeConfig(num_frozen_layers=2, untie_embeddings=True))
    assert model.lm_head.weight is model.model.embed_tokens.weight and model.config.tie_word_embeddings
    assert_as_it_came(model, tied_dropout_llama())


def test_a_refusal_when_train_starts_undoes_the_run(monkeypatch, tmp_path):
    """The deferred route (FSDP, DeepSpeed, meta): refused at train start, the kernels, prefix and freeze are
    undone there too (Trainer's own changes by then, e.g. train mode, are Trainer's)."""
    from fastfreeze import trainer as trainer_mod

    monkeypatch.setattr(trainer_mod, "placed_for_training", lambda trainer: False)
    model = _dropout_llama()
    trainer = FastFreezeTrainer(model=model, args=training_args(str(tmp_path), steps=1, grad_accum=1),
                                train_dataset=Dataset.from_list(make_rows(8)), data_collator=pad_collator(),
                                freeze_config=FreezeConfig(num_frozen_layers=2, kernels="triton"))
    assert not model.model.embed_tokens.weight.requires_grad
    with pytest.raises(UnsupportedModelError, match="draw random numbers"):
        trainer.train()
    assert all(p.requires_grad for p in model.parameters()) and not trainer.freeze_runtime.completed
    assert not [n for n, m in model.named_modules() if "forward" in m.__dict__ or any(k.startswith("_ff") for k in m.__dict__)]


def test_a_freeze_that_leaves_nothing_to_train_is_refused_as_it_came():
    """The user froze the suffix already: freezing the prefix too leaves nothing to train (refused after the
    freeze was applied); the prefix parameters it froze are trainable again."""
    def suffix_frozen():
        model = make_model("llama")
        for module in (*model.model.layers[2:], model.model.norm, model.lm_head):
            module.requires_grad_(False)
        return model

    model = suffix_frozen()
    with pytest.raises(FreezeConfigError, match="leaves nothing to train"):
        apply_freeze(model, FreezeConfig(num_frozen_layers=2))
    assert_as_it_came(model, suffix_frozen())


def test_a_refused_peft_model_is_left_as_it_came(tmp_path):
    model, untouched = _refused("peft", tmp_path)
    assert_as_it_came(model, untouched)
    assert len(model.get_base_model().model.embed_tokens._forward_hooks) == 2  # the model's hook, HF's hook


def test_prepare_freeze_validates_the_config_once(monkeypatch):
    """The config was validated when built; prepare_freeze checks only its depth against the model, once
    (it used to run that check in runtime.py and again in freeze.py, and rebuild the config twice)."""
    calls, built = [], []
    real_check, real_init = FreezeConfig.validate_for, FreezeConfig.__post_init__
    monkeypatch.setattr(FreezeConfig, "validate_for", lambda self, n: (calls.append(n), real_check(self, n))[1])
    config = FreezeConfig(num_frozen_layers=2, probe=False)
    monkeypatch.setattr(FreezeConfig, "__post_init__", lambda self: (built.append(self), real_init(self))[1])
    prepare_freeze(make_model("llama"), config)
    assert calls == [4] and built == []
    with pytest.raises(FreezeConfigError, match="0..4"):
        prepare_freeze(make_model("llama"), FreezeConfig(num_frozen_layers=5))
