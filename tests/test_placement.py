"""Where the model trains decides the device-dependent set-up: the CPU-loaded pattern (Trainer moves the model), meta weights, ZeRO-3.

A CUDA device cannot be made on this machine, so the device seam is faked in tests only: the kernel
decision is a function of the training device (`choose_kernel_set(..., device=)`), and the trainer is
shown to take that decision after Trainer.__init__ placed the model, with `args.device`. The GPU
suite step (benchmarks/gpu/placement_check.py) checks the real thing on a GPU.
"""
from __future__ import annotations

import logging
import pickle
from types import SimpleNamespace

import pytest
import torch
import transformers

import csrc_triton
from fastfreeze import FastFreezeTrainer, FreezeConfig, UnsupportedModelError, apply_freeze
from fastfreeze import kernels as kernels_mod
from fastfreeze import runtime as runtime_mod
from fastfreeze.placement import DeferredCollator, placed_for_training
from fastfreeze.runtime import complete_freeze, prepare_freeze
from tests._helpers import make_model
from tests.parity.harness import training_args


def _fake_cuda(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(csrc_triton, "AVAILABLE", True)
    monkeypatch.delenv(kernels_mod.ENV_SWITCH, raising=False)


def test_kernel_set_follows_the_training_device_not_where_the_weights_are_now(monkeypatch):
    _fake_cuda(monkeypatch)
    model = make_model("llama")  # on the CPU, as run_clm.py loads it
    assert kernels_mod.choose_kernel_set("auto", model).kernel_set == "torch"
    assert kernels_mod.choose_kernel_set("auto", model, device=torch.device("cuda", 0)).kernel_set == "triton"
    assert kernels_mod.choose_kernel_set("auto", model, device="cpu").kernel_set == "torch"
    assert kernels_mod.choose_kernel_set("torch", model, device="cuda").kernel_set == "torch"


def test_torch_on_cuda_says_why(monkeypatch):
    _fake_cuda(monkeypatch)
    model = make_model("llama")  # the one function decides the set and its reason together
    assert kernels_mod.choose_kernel_set("auto", model, "cuda") == ("triton", None)
    assert kernels_mod.choose_kernel_set("auto", model, "cpu") == ("torch", None)
    assert "FreezeConfig(kernels='torch')" in kernels_mod.choose_kernel_set("torch", model, "cuda").reason
    monkeypatch.setattr(csrc_triton, "AVAILABLE", False)
    assert "triton cannot be imported" in kernels_mod.choose_kernel_set("auto", model, "cuda").reason
    monkeypatch.setenv(kernels_mod.ENV_SWITCH, "torch")
    assert kernels_mod.ENV_SWITCH in kernels_mod.choose_kernel_set("auto", model, "cuda").reason


def test_trainer_decides_kernels_after_trainer_placed_the_model(monkeypatch, tmp_path):
    """The run_clm.py pattern: the model comes on the CPU and Trainer.__init__ moves it to args.device.
    The kernel set must be chosen after that move, for args.device (before it, 'auto' saw a CPU
    parameter and chose torch for a CUDA run)."""
    events = []
    model = make_model("llama")
    move = model.to  # Trainer places the model with its public `.to(device)` (spied per instance)
    model.to = lambda device, *a, **kw: (events.append(("moved", str(device))), move(device, *a, **kw))[1]
    resolve = runtime_mod.choose_kernel_set

    def spy(choice, model, device=None):
        events.append(("kernels", str(device)))
        return resolve(choice, model, device=device)

    monkeypatch.setattr(runtime_mod, "choose_kernel_set", spy)
    args = training_args(str(tmp_path))
    t = FastFreezeTrainer(model=model, args=args, freeze_config=FreezeConfig(num_frozen_layers=2))
    assert events == [("moved", str(args.device)), ("kernels", str(args.device))]
    report = t.freeze_report
    assert (report.kernel_set, report.device) == ("torch", "cpu") and "kernels: torch on cpu" in str(report)
    assert t.freeze_runtime.completed and t.freeze_runtime.probe is not None


def test_complete_freeze_logs_why_a_cuda_run_uses_torch(monkeypatch, caplog):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # where the triton decision looks
    monkeypatch.setenv(kernels_mod.ENV_SWITCH, "torch")
    runtime = prepare_freeze(make_model("llama"), FreezeConfig(num_frozen_layers=2, probe=False))
    with caplog.at_level(logging.WARNING, logger="fastfreeze"):
        complete_freeze(runtime, device=torch.device("cuda", 0))
    assert runtime.kernel_set == "torch" and any(kernels_mod.ENV_SWITCH in r.message for r in caplog.records)
    assert any(kernels_mod.ENV_SWITCH in n for n in runtime.report.notes)


def _meta_model():
    cfg = make_model("llama").config
    with torch.device("meta"):
        return transformers.LlamaForCausalLM(cfg)


def test_meta_weights_freeze_at_construction_and_are_refused_only_where_they_must_run():
    model = _meta_model()
    runtime = prepare_freeze(model, FreezeConfig(num_frozen_layers=2))
    assert not model.model.layers[1].self_attn.q_proj.weight.requires_grad
    assert model.model.layers[2].self_attn.q_proj.weight.requires_grad and not runtime.completed
    with pytest.raises(UnsupportedModelError, match="still on the meta device") as err:
        complete_freeze(runtime)
    assert "other inputs" not in str(err.value)
    with pytest.raises(UnsupportedModelError, match="cpu_ram_efficient_loading"):
        apply_freeze(_meta_model(), FreezeConfig(num_frozen_layers=2))


def test_zero3_weights_partitioned_at_load_wait_for_the_engine():
    """A weight zero.Init partitioned (marked `ds_id`; no engine hooks yet) defers the rest of the freeze to
    train start, and completing it before an engine runs the model is refused, naming the way that works.
    The real thing (2 ranks, from_pretrained under zero.Init): tests/integrations/test_deepspeed.py."""
    model = make_model("llama")
    runtime = prepare_freeze(model, FreezeConfig(num_frozen_layers=2))
    model.model.layers[0].mlp.up_proj.weight.ds_id = 7  # how DeepSpeed zero.Init marks a partitioned weight
    assert runtime_mod.zero3_state(model) == "at load"
    trainer = SimpleNamespace(freeze_runtime=runtime, args=SimpleNamespace(device=torch.device("cpu")),
                              place_model_on_device=False, is_fsdp_enabled=False, is_deepspeed_enabled=True)
    assert placed_for_training(trainer) is False
    with pytest.raises(UnsupportedModelError, match=r"ZeRO-3.*at train start, under the engine"):
        complete_freeze(runtime)
    model.model.ds_recompute_parameters = set()  # what the ZeRO-3 engine leaves on each module it hooked
    assert runtime_mod.zero3_state(model) == "engine"


def _trainer_like(where: str, device: str, place: bool = True, fsdp: bool = False, deepspeed: bool = False):
    model = _meta_model() if where == "meta" else make_model("llama")
    return SimpleNamespace(freeze_runtime=SimpleNamespace(target=model), args=SimpleNamespace(device=torch.device(device)),
                           place_model_on_device=place, is_fsdp_enabled=fsdp, is_deepspeed_enabled=deepspeed)


@pytest.mark.parametrize("where, device, kw, ready", [
    ("cpu", "cpu", {}, True),                       # Trainer placed it (or it was there)
    ("meta", "cpu", {}, False),                     # no weights yet
    ("cpu", "cuda:0", {"fsdp": True}, False),       # FSDP moves it at train start
    ("cpu", "cuda:0", {"deepspeed": True}, False),  # so does DeepSpeed
    ("cpu", "cuda:0", {"place": False}, True),      # model parallel / place_model_on_device=False: trains where it is
])
def test_placed_for_training(where, device, kw, ready):
    assert placed_for_training(_trainer_like(where, device, **kw)) is ready


def test_deferred_collator_hands_over_and_pickles():
    handover = DeferredCollator(lambda feats: {"n": len(feats)})
    assert handover([1, 2]) == {"n": 2}
    handover.inner = len
    assert pickle.loads(pickle.dumps(DeferredCollator(len)))([1, 2, 3]) == 3 and handover([1]) == 1


def _train(tmp_path, defer: bool, monkeypatch):
    from datasets import Dataset

    from fastfreeze import trainer as trainer_mod
    from tests._helpers import make_rows, pad_collator

    monkeypatch.setattr(trainer_mod, "placed_for_training", lambda trainer: not defer)
    args = training_args(str(tmp_path), steps=4, grad_accum=1, per_device_train_batch_size=4)
    t = FastFreezeTrainer(model=make_model("llama"), args=args, train_dataset=Dataset.from_list(make_rows(8)),
                          data_collator=pad_collator(pad_to=12),
                          freeze_config=FreezeConfig(num_frozen_layers=2, cache="memory"))
    state = (t.freeze_runtime.completed, t.prefix is not None, "not chosen yet" in str(t.freeze_report))
    if defer:
        with pytest.raises(Exception, match="not yet where it trains"):
            t.build_prefix_cache()
    t.train()
    return t, state


def test_a_set_up_deferred_to_train_start_trains_like_one_done_at_construction(tmp_path, monkeypatch):
    """The FSDP / DeepSpeed / meta route in one process: nothing but the freeze at construction, the
    rest (probe, kernels, cache and its collator hand-over) at train start; same weights, bitwise,
    and the cache serves epoch 2."""
    now, now_state = _train(tmp_path / "now", False, monkeypatch)
    later, later_state = _train(tmp_path / "later", True, monkeypatch)
    assert now_state == (True, True, False) and later_state == (False, False, True)
    assert later.freeze_runtime.completed and later.freeze_runtime.probe is not None
    assert later.cache_summary().hits == now.cache_summary().hits == 8
    ref = dict(now.model.named_parameters())
    for name, p in later.model.named_parameters():
        assert torch.equal(p, ref[name]), name


def _meta_parameters(attn: str):
    """What from_pretrained(device_map='meta') leaves, and FSDP RAM-efficient loading on ranks > 0:
    every parameter on meta, the buffers real."""
    model = make_model("llama", attn=attn)
    for module in model.modules():
        for name, p in list(module.named_parameters(recurse=False)):
            setattr(module, name, torch.nn.Parameter(p.detach().to("meta"), requires_grad=p.requires_grad))
    return model


@pytest.mark.parametrize("model", [lambda: _meta_parameters("eager"), lambda: _meta_parameters("sdpa"), _meta_model],
                         ids=["parameters-eager", "parameters-sdpa", "everything-eager"])
def test_meta_weights_in_one_process_are_refused_naming_meta_and_how_to_load(model, tmp_path):
    """Before: Trainer's move failed ("Cannot copy out of meta tensor"), or the probe blamed the inputs."""
    from datasets import Dataset

    from tests._helpers import make_rows, pad_collator

    model = model()
    with pytest.raises(UnsupportedModelError) as err:
        FastFreezeTrainer(model=model, args=training_args(str(tmp_path), steps=1), data_collator=pad_collator(),
                          train_dataset=Dataset.from_list(make_rows(4)), freeze_config=FreezeConfig(num_frozen_layers=2))
    message = str(err.value)
    assert "weights are on the meta device" in message and "other inputs" not in message
    assert all(how in message for how in ("from_pretrained", "to_empty", "load_state_dict", "cpu_ram_efficient_loading"))
    assert all(p.requires_grad for p in model.parameters())  # refused before anything was frozen


@pytest.mark.parametrize("fsdp, world_size, env, filled", [
    (["full_shard"], 2, None, True),   # FSDP across processes: accelerate fills ranks > 0 from rank 0
    (["full_shard"], 1, None, False),  # one process: rank 0 itself must hold the weights
    ([], 2, None, False),              # DDP: nothing fills them
    ([], 2, "true", True),             # FSDP from `accelerate launch`'s config, not from TrainingArguments
])
def test_meta_weights_are_filled_only_by_fsdp_across_processes(fsdp, world_size, env, filled, monkeypatch):
    from fastfreeze.placement import meta_weights_filled_at_train_start

    monkeypatch.delenv("ACCELERATE_USE_FSDP", raising=False)
    if env:
        monkeypatch.setenv("ACCELERATE_USE_FSDP", env)
    assert meta_weights_filled_at_train_start(SimpleNamespace(fsdp=fsdp, world_size=world_size)) is filled
