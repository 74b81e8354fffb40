"""fastfreeze._hf_compat against the installed transformers / TRL / PEFT / torch: one test per shim, each of
which fails, naming the shim, when a release moves or changes the internal it stands for."""
from __future__ import annotations

import importlib.util
import inspect

import pytest
import torch
import transformers
from datasets import Dataset
from transformers import Trainer, TrainingArguments

from fastfreeze import _hf_compat as hf
from tests._helpers import make_model, make_rows, pad_collator

try:  # the kernel below is read by triton's compiler, which resolves `tl` from this module
    import triton.language as tl
except ImportError:  # pragma: no cover - no triton on this platform: the triton test skips
    tl = None


def test_text_config_of_a_multimodal_config():
    cfg = transformers.Gemma3Config()
    assert isinstance(hf.text_config(cfg), transformers.Gemma3TextConfig)
    plain = make_model("llama").config
    assert hf.text_config(plain) is plain


def test_attn_implementation_is_read_from_the_config():
    assert hf.attn_implementation(make_model("llama", attn="eager").config) == "eager"
    assert hf.attn_implementation(make_model("llama", attn="sdpa").config) == "sdpa"


def test_causal_lm_loss_is_the_loss_a_causal_lm_uses():
    loss = hf.causal_lm_loss()
    assert loss is not None, "transformers.loss.loss_utils.ForCausalLMLoss moved: the fused loss would stay off"
    assert make_model("llama").loss_function is loss


def test_linear_types_cover_gpt2_conv1d():
    model = make_model("gpt2")
    assert isinstance(model.transformer.h[0].attn.c_attn, hf.linear_types())
    assert len(hf.linear_types()) == 2, "transformers.pytorch_utils.Conv1D moved"


@pytest.mark.parametrize("reentrant", [True, False])
def test_uses_reentrant_checkpointing_reads_the_block(reentrant):
    model = make_model("llama")
    block = model.model.layers[2]
    assert hf.uses_reentrant_checkpointing(block) is False  # off
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": reentrant})
    assert hf.uses_reentrant_checkpointing(block) is reentrant
    assert hf.uses_reentrant_checkpointing(None) is False


def test_input_require_grads_enabled_follows_enable_and_disable():
    model = make_model("llama")
    assert hf.input_require_grads_enabled(model) is False
    model.enable_input_require_grads()
    assert hf.input_require_grads_enabled(model) is True
    model.disable_input_require_grads()
    assert hf.input_require_grads_enabled(model) is False


def test_trainer_hooks_run_on_save_and_on_every_batch(tmp_path):
    for name, params in (("_save", ["self", "output_dir", "state_dict"]), ("_prepare_inputs", ["self", "inputs"])):
        assert list(inspect.signature(getattr(Trainer, name)).parameters) == params, f"Trainer.{name} changed"
    calls = {"save": [], "prepare": 0}

    class Spy(hf.TrainerHooks, Trainer):
        def save_freeze_config(self, output_dir):
            calls["save"].append(output_dir)

        def prepare_batch(self, inputs, prepare):
            calls["prepare"] += 1
            return prepare(inputs)

    args = TrainingArguments(output_dir=str(tmp_path), max_steps=2, per_device_train_batch_size=4, save_strategy="steps",
                             save_steps=2, report_to=[], use_cpu=True, disable_tqdm=True)
    trainer = Spy(model=make_model("llama"), args=args, train_dataset=Dataset.from_list(make_rows(8)),
                  data_collator=pad_collator())
    trainer.train()
    assert calls["prepare"] == 2 and calls["save"] == [str(tmp_path / "checkpoint-2")]
    trainer.save_model(str(tmp_path / "final"))
    assert calls["save"][-1] == str(tmp_path / "final")


def test_remove_unused_columns_drops_what_the_model_does_not_take(tmp_path):
    args = TrainingArguments(output_dir=str(tmp_path), report_to=[], use_cpu=True)
    trainer = Trainer(model=make_model("llama"), args=args)
    ds = Dataset.from_list([{"input_ids": [1, 2], "labels": [1, 2], "junk": "x"}])
    assert hf.remove_unused_columns(trainer, ds, "test").column_names == ["input_ids", "labels"]


def test_training_argument_names_and_warmup_ratio(tmp_path):
    names = hf.training_argument_names()
    assert {"learning_rate", "warmup_steps", "warmup_ratio"} <= names
    args = TrainingArguments(output_dir=str(tmp_path), **hf.adapt_training_kwargs({"warmup_ratio": 0.1}))
    assert getattr(args, "warmup_ratio", None) == 0.1 or args.warmup_steps == 0.1


def test_optimizer_names():
    names = hf.optimizer_names()
    assert names is not None and {"adamw_torch", "sgd"} <= names, "transformers.training_args.OptimizerNames moved"


def test_compile_events_count_dynamo_frames():
    before = hf.compile_events()
    fn = torch.compile(lambda x: x * 2 + 1, backend="eager")
    fn(torch.ones(3))
    assert hf.compile_events() > before, "torch._dynamo.utils.counters['frames']['total'] moved"


def test_trl_load_model_and_padding_free(tmp_path):
    pytest.importorskip("trl")
    from trl import SFTConfig

    make_model("llama").save_pretrained(tmp_path / "m")
    loaded = hf.trl_load_model(str(tmp_path / "m"), SFTConfig(output_dir=str(tmp_path / "o"), use_cpu=True))
    assert type(loaded).__name__ == "LlamaForCausalLM"

    class Flat:
        padding_free = True

    assert hf.sft_padding_free(Flat()) and not hf.sft_padding_free(object())
    # That SFTTrainer still calls the attribute `padding_free` is checked end to end by
    # tests/integrations/test_trl.py::test_build_prefix_cache_refused_for_multi_example_padding_free.


def test_trl_fused_lm_head_recognises_trls_forward_only():
    """TRL's add_fused_lm_head (what SFTTrainer >= 1.16 calls) is recognised; a plain model, another per-instance
    forward and fastfreeze's own fused loss are not."""
    pytest.importorskip("trl")
    from trl.trainer.utils import add_fused_lm_head

    import types

    from fastfreeze.families import resolve
    from fastfreeze.kernels import install_kernels

    plain, other, trl_model = make_model("llama"), make_model("llama"), make_model("llama")
    other.forward = types.MethodType(lambda self, *a, **k: None, other)
    add_fused_lm_head(trl_model)
    assert hf.trl_fused_lm_head(trl_model)
    assert not hf.trl_fused_lm_head(plain) and not hf.trl_fused_lm_head(other)
    if torch.cuda.is_available():  # without CUDA the kernels run interpreted (tests/conftest.py)
        plain.cuda()
    install_kernels(plain, resolve(plain), num_frozen_layers=0)  # its fused loss is an instance forward too
    assert "forward" in plain.__dict__ and not hf.trl_fused_lm_head(plain)


def test_peft_adapter_types_and_default_targets():
    peft = pytest.importorskip("peft")
    types = hf.peft_adapter_types()
    assert len(types) == 2, "peft.tuners.tuners_utils.BaseTunerLayer / peft.utils.other wrappers moved"
    model = peft.get_peft_model(make_model("llama"), peft.LoraConfig(target_modules=["q_proj"], modules_to_save=["lm_head"]))
    kinds = {t for t in types for m in model.modules() if isinstance(m, t)}
    assert kinds == set(types)
    assert hf.peft_default_targets("llama") == ["q_proj", "v_proj"]
    assert hf.peft_default_targets("no-such-model") is None


def test_trl_load_model_passes_quantization_config(tmp_path, monkeypatch):
    """SFTTrainer(model=<id>, quantization_config=q) loads with q; our pre-freeze load must too (it
    used to drop q, and SFTTrainer then only warned that it was ignored)."""
    pytest.importorskip("trl")
    import trl.trainer.utils as trl_utils
    from trl import SFTConfig

    seen = {}
    monkeypatch.setattr(trl_utils, "create_model_from_path", lambda name, **kw: seen.update(kw) or name)
    args = SFTConfig(output_dir=str(tmp_path / "o"), use_cpu=True)
    q = object()  # stands in for a BitsAndBytesConfig (bitsandbytes is not installed here)
    hf.trl_load_model("m", args, quantization_config=q)
    assert seen["quantization_config"] is q
    args.model_init_kwargs = {"quantization_config": object()}
    with pytest.raises(ValueError, match="one place"):
        hf.trl_load_model("m", args, quantization_config=q)


def test_set_attn_implementation_uses_the_public_setter():
    model = make_model("llama", attn="eager")
    assert callable(getattr(model, "set_attn_implementation", None)), "PreTrainedModel.set_attn_implementation is gone"
    hf.set_attn_implementation(model, "sdpa")
    assert hf.attn_implementation(model.config) == "sdpa"


def test_is_quantized_reads_what_from_pretrained_sets():
    model = make_model("llama")
    assert not hf.is_quantized(model)
    model.hf_quantizer = object()  # what from_pretrained(quantization_config=...) attaches
    assert hf.is_quantized(model)


def test_dataset_fingerprint_follows_every_transform():
    ds = Dataset.from_dict({"x": [1, 2, 3]})
    assert isinstance(getattr(ds, "_fingerprint", None), str), "datasets.Dataset._fingerprint is gone: the fallback hashes"
    mapped = ds.map(lambda r: {"x": r["x"] + 1})
    assert hf.dataset_fingerprint(ds) == hf.dataset_fingerprint(Dataset.from_dict({"x": [1, 2, 3]}))
    assert hf.dataset_fingerprint(mapped) != hf.dataset_fingerprint(ds)


def test_dataset_from_arrow_equals_from_dict():
    import datasets
    import pyarrow as pa

    features = datasets.Features({"text": datasets.Value("string"), "n": datasets.Value("int32")})
    columns = {"text": ["a", "b"], "n": [1, 2]}
    info = datasets.DatasetInfo(description="d", features=features)
    got = hf.dataset_from_arrow(pa.Table.from_pydict(columns, schema=features.arrow_schema), info)
    want = Dataset.from_dict(columns, features=features)
    assert got.features == want.features and got.to_dict() == want.to_dict()
    assert got.info.description == "d"
    from datasets.table import InMemoryTable  # noqa: F401  (the fast path: a release that moves it falls back)


def test_is_peft_model_recognises_wrappers_only():
    peft = pytest.importorskip("peft")
    model = make_model("llama")
    assert not hf.is_peft_model(model)
    wrapped = peft.get_peft_model(model, peft.LoraConfig(r=2, target_modules=["q_proj"]))
    assert hf.is_peft_model(wrapped)
    assert not hf.is_peft_model(wrapped.get_base_model())


def test_last_checkpoint_finds_the_newest(tmp_path):
    assert hf.last_checkpoint(str(tmp_path)) is None
    for step in (5, 10):
        (tmp_path / f"checkpoint-{step}").mkdir()
    assert hf.last_checkpoint(str(tmp_path)).endswith("checkpoint-10")


def test_package_imports_no_dependency_internals_outside_the_shims():
    """New code reaches transformers / TRL / PEFT / accelerate / datasets internals only through
    fastfreeze/_hf_compat.py: any `from <dep>.<submodule> import` elsewhere in the package fails here."""
    import re
    from pathlib import Path

    root = Path(hf.__file__).resolve().parent
    pattern = re.compile(r"^\s*(?:from|import)\s+(transformers|trl|peft|accelerate|datasets)\.[\w.]+", re.M)
    leaks = [f"{path.relative_to(root.parent)}: {m.group(0).strip()}"
             for path in sorted(root.rglob("*.py")) if path.name != "_hf_compat.py"
             for m in pattern.finditer(path.read_text())]
    assert not leaks, "route these through fastfreeze/_hf_compat.py:\n" + "\n".join(leaks)


def test_checkpointing_training_kwargs_turn_checkpointing_on(tmp_path):
    kw = hf.checkpointing_training_kwargs(True, use_reentrant=False)
    args = TrainingArguments(output_dir=str(tmp_path), use_cpu=True, report_to=[], **kw)
    (flag,) = [k for k in kw if not k.endswith("_kwargs")]
    assert getattr(args, flag) is True
    assert getattr(args, f"{flag}_kwargs") == {"use_reentrant": False}
    assert hf.checkpointing_training_kwargs(False) == {flag: False}


def test_set_config_attn_implementation_reaches_sub_configs_and_the_model():
    cfg = transformers.Gemma3Config()
    hf.set_config_attn_implementation(cfg, "eager")
    assert hf.attn_implementation(cfg) == hf.attn_implementation(hf.text_config(cfg)) == "eager"
    hf.set_config_attn_implementation(cfg, "sdpa")  # changes it again, sub-configs included
    assert hf.attn_implementation(hf.text_config(cfg)) == "sdpa"
    plain = make_model("llama", attn="sdpa").config
    hf.set_config_attn_implementation(plain, "eager")
    assert hf.attn_implementation(transformers.AutoModelForCausalLM.from_config(plain).config) == "eager"


def test_causal_lm_model_types_are_the_registered_ones():
    types = hf.causal_lm_model_types()
    assert types == sorted(types) and {"llama", "gpt2", "mixtral", "qwen2"} <= set(types), (
        "transformers.models.auto.modeling_auto.MODEL_FOR_CAUSAL_LM_MAPPING_NAMES moved")
    assert "t5" not in types  # encoder-decoder: not an AutoModelForCausalLM type
    assert all(t in transformers.CONFIG_MAPPING for t in types)


def test_dispatch_mode_sees_aten_ops_and_tree_leaves_flattens_arguments():
    seen = []

    class Spy(hf.dispatch_mode_base()):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            seen.append((str(func), hf.tree_leaves((args, kwargs or {}))))
            return func(*args, **(kwargs or {}))

    x = torch.ones(2)
    with Spy():
        y = x + 1
    assert seen and seen[0][0] == "aten.add.Tensor", "torch.utils._python_dispatch.TorchDispatchMode moved"
    assert seen[0][1][0] is x and torch.equal(y, torch.full((2,), 2.0))
    a, b, c = torch.zeros(1), torch.zeros(2), torch.zeros(3)
    leaves = hf.tree_leaves(((a, [b, {"k": c}]), 4))
    assert len(leaves) == 4 and all(p is q for p, q in zip(leaves, (a, b, c))) and leaves[3] == 4


def test_raise_recompile_limit_sets_dynamo_config():
    config = torch._dynamo.config
    names = [n for n in ("cache_size_limit", "recompile_limit") if hasattr(config, n)]
    before = {n: getattr(config, n) for n in names}
    try:
        assert hf.raise_recompile_limit(64) == names and names, "torch._dynamo.config recompile limit renamed"
        assert all(getattr(config, n) == 64 for n in names)
    finally:
        for n, v in before.items():
            setattr(config, n, v)


def _add_one(x_ptr, n, BLOCK: "tl.constexpr"):  # compiled by triton (AOT), never called by Python
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    tl.store(x_ptr + offs, tl.load(x_ptr + offs, mask=offs < n) + 1, mask=offs < n)


def test_triton_specialize_and_compile_for_a_gpu_without_one():
    """The AOT check's triton internals (benchmarks/aot/check.py): the binder specializes on the arguments
    (divisibility by 16 of an integer and a pointer, constexprs), and the kernel compiles to a cubin."""
    triton = pytest.importorskip("triton")

    class Ptr:  # what the binder reads from a tensor argument
        dtype = torch.float32

        def data_ptr(self):
            return 1 << 20

    kernel, target = triton.JITFunction(_add_one), hf.triton_gpu_target(90)  # compiled even under TRITON_INTERPRET
    aligned = hf.triton_specialize(kernel, (Ptr(), 4096), {"BLOCK": 128, "num_warps": 4}, target)
    options, signature, constexprs, attrs = aligned
    assert options.num_warps == 4 and signature == {"x_ptr": "*fp32", "n": "i32", "BLOCK": "constexpr"}
    assert list(constexprs.values()) == [128] and ["tt.divisibility", 16] in attrs[(1,)]
    odd = hf.triton_specialize(kernel, (Ptr(), 4097), {"BLOCK": 128, "num_warps": 4}, target)[3]
    assert ["tt.divisibility", 16] not in odd.get((1,), [])
    assert hf.triton_nvidia_tool("cuobjdump") and hf.triton_nvidia_tool("no-such-tool") is None
    compiled = hf.triton_compile(kernel, aligned, target)
    assert compiled.asm["cubin"] and ".target sm_90" in compiled.asm["ptx"]


def test_zero3_shims_read_what_deepspeed_marks():
    """Plain tensors are not ZeRO-3 ones and gather as a no-op; a marked one counts as its full size.
    The real partitions (zero.Init, the engine's hooks): tests/integrations/test_deepspeed.py."""
    from fastfreeze._hf_compat import full_numel, zero3_engine_hooks, zero3_gathered, zero3_gathered_per_module
    from fastfreeze._hf_compat import zero3_partitioned

    layer = torch.nn.Linear(3, 2)
    assert not zero3_partitioned(layer.weight) and full_numel(layer.weight) == 6 and not zero3_engine_hooks(layer)
    with zero3_gathered(layer.parameters()), zero3_gathered_per_module(layer):
        assert layer(torch.ones(1, 3)).shape == (1, 2)
    layer.weight.ds_id, layer.weight.ds_numel = 0, 600
    assert zero3_partitioned(layer.weight) and full_numel(layer.weight) == 600
    layer.ds_recompute_parameters = set()
    assert zero3_engine_hooks(layer)
    if importlib.util.find_spec("deepspeed") is not None:
        import deepspeed

        assert callable(deepspeed.zero.GatheredParameters)


def test_full_shape_reads_a_zero3_placeholders_ds_shape():
    """zero.Init leaves an empty placeholder (shape [0]) and the whole shape in ds_shape; the kernels' install check
    sizes its probe input from it (tests/integrations/test_deepspeed.py runs the real thing)."""
    whole = torch.nn.Parameter(torch.ones(32))
    placeholder = torch.nn.Parameter(torch.empty(0))
    placeholder.ds_shape, placeholder.ds_id = torch.Size([32]), 3
    assert hf.full_shape(whole) == hf.full_shape(placeholder) == torch.Size([32])
