"""install_kernels: per-instance swaps give the model's own outputs and gradients, and leave a plain HF model."""
from __future__ import annotations

import copy
import inspect
import os

import pytest
import torch
import transformers

from fastfreeze.families import resolve
from fastfreeze.kernels import KernelReport, install_kernels, remove_kernels
from tests._helpers import VOCAB, make_model, seed_snippet_freeze
from tests._kernel_fixtures import _fresh_seed, nan_buffers  # noqa: F401  (autouse fixtures of the kernel tests)

# fp32 everywhere. The kernels compute the same math in a different reduction order (RMSNorm's
# mean of squares, the online logsumexp over vocab blocks, one [B*T, H] head GEMM): that moves
# results by a few ulps per op, ~1e-7 relative after 4 layers (measured <= 1.1e-6 on gradients).
# 1e-5 sits well above that and far below any real mistake (a missing Gemma offset: ~1; a wrong
# label shift: ~1e-1).
RTOL = 1e-5
K = 2
# On a GPU machine (gpu_suite.sh) the same tests run the compiled kernels on CUDA models.
DEV = "cuda" if torch.cuda.is_available() else "cpu"


def _model(family, **kw):
    return make_model(family, **kw).to(DEV)


def _pair(family):
    """(reference, swapped) models with identical weights and the same freeze; report of the swap."""
    ref, model = _model(family), _model(family)
    for m in (ref, model):
        seed_snippet_freeze(m, family, K)
    report = install_kernels(model, resolve(model), K)
    return ref, model, report


def _batch(seed=0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, VOCAB, (2, 9), generator=g)
    labels = ids.clone()
    labels[0, :3] = -100  # prompt-masked row
    mask = torch.ones_like(ids)
    mask[1, -2:] = 0
    labels[1, -2:] = -100  # right padding
    return {k: v.to(DEV) for k, v in {"input_ids": ids, "attention_mask": mask, "labels": labels}.items()}


def _close(a, b, rtol=RTOL):
    return ((a.double() - b.double()).abs().max() <= rtol * b.double().abs().max().clamp_min(1e-12)).item()


# family -> swapped module kinds expected in the report
EXPECTED = {
    "llama": {"rms_norm/forward-only": 4, "rms_norm/train": 5, "swiglu/forward-only": 2, "swiglu/train": 2},
    "qwen3": {"rms_norm/forward-only": 8, "rms_norm/train": 9, "swiglu/forward-only": 2, "swiglu/train": 2},
    "gemma2": {"rms_norm/forward-only": 8, "rms_norm/train": 9},  # 4 norms per block; GeGLU stays torch
    "phi3": {"rms_norm/forward-only": 4, "rms_norm/train": 5, "swiglu/forward-only": 2, "swiglu/train": 2},
    "gpt_neox": {},  # LayerNorm / GELU stay torch
}


@pytest.mark.parametrize("family", list(EXPECTED))
def test_swapped_model_matches_its_own_forward(family):
    ref, model, report = _pair(family)
    counts = report.counts()
    loss_label = next(v for v in counts if v.startswith("linear_cross_entropy"))
    assert counts.pop(loss_label) == 1
    assert counts == EXPECTED[family], str(report)
    if family == "gemma2":
        assert "softcap 30.0" in loss_label  # the family's final-logit soft-cap goes into the fused loss
    if family == "qwen3":
        assert report.swapped["model.layers.3.self_attn.q_norm"] == "rms_norm/train"

    batch = _batch()
    # Eval without labels: logits through the swapped norms / MLPs.
    ref.eval(), model.eval()
    with torch.no_grad():
        assert _close(model(input_ids=batch["input_ids"]).logits, ref(input_ids=batch["input_ids"]).logits)
    # Training with labels: the fused loss, no logits, same gradients for every trainable parameter.
    ref.train(), model.train()
    out_ref, out = ref(**batch), model(**batch)
    assert out.logits is None and out_ref.logits is not None
    assert abs(out.loss.item() - out_ref.loss.item()) <= RTOL * abs(out_ref.loss.item())
    out_ref.loss.backward()
    out.loss.backward()
    for (name, p_ref), p in zip(ref.named_parameters(), model.parameters()):
        if p_ref.requires_grad:
            assert p.grad is not None and _close(p.grad, p_ref.grad), name
        else:
            assert p.grad is None, f"frozen {name} got a gradient"


def test_loss_with_num_items_in_batch_and_eval_labels():
    ref, model, _ = _pair("llama")
    batch = _batch(1)
    ref.train(), model.train()
    n = torch.tensor(40, device=DEV)  # gradient accumulation: HF divides the summed loss by the tokens of all micro-batches
    a, b = model(**batch, num_items_in_batch=n).loss, ref(**batch, num_items_in_batch=n).loss
    assert abs(a.item() - b.item()) <= RTOL * abs(b.item())
    assert abs(a.item() - model(**batch).loss.item()) > 1e-3  # the denominator really changed the value
    # Eval mode keeps the model's own head path: logits come back for compute_metrics.
    ref.eval(), model.eval()
    with torch.no_grad():
        out, out_ref = model(**batch), ref(**batch)
    assert out.logits is not None and _close(out.logits, out_ref.logits)
    assert abs(out.loss.item() - out_ref.loss.item()) <= RTOL * abs(out_ref.loss.item())


def test_frozen_norm_weights_get_no_weight_gradient(nan_buffers):
    """With every norm frozen, the norm backward runs (dX flows to trainable layers below) but no
    dW buffer is ever allocated, and the frozen weights keep grad None. (nan_buffers, from
    tests/_kernel_fixtures.py: every kernel buffer starts as NaN, and its list records their tags.)"""
    ref, model, _ = _pair("llama")
    for m in (ref, model):
        for name, p in m.named_parameters():
            if "norm" in name:
                p.requires_grad_(False)
    model.train()
    nan_buffers.clear()
    model(**_batch()).loss.backward()
    log = list(nan_buffers)
    assert "rms_norm.dx" in log and "rms_norm.dw_partial" not in log
    assert all(p.grad is None for n, p in model.named_parameters() if "norm" in n)
    ref.train()
    ref(**_batch()).loss.backward()
    assert _close(model.model.layers[2].mlp.up_proj.weight.grad, ref.model.layers[2].mlp.up_proj.weight.grad)


def test_prefix_modules_are_forward_only():
    _, model, report = _pair("llama")
    assert report.swapped["model.layers.0.input_layernorm"] == "rms_norm/forward-only"
    assert report.swapped["model.layers.1.mlp"] == "swiglu/forward-only"
    assert report.swapped["model.layers.2.mlp"] == "swiglu/train"
    x = torch.randn(2, 3, 32, device=DEV, requires_grad=True)
    assert not model.model.layers[0].post_attention_layernorm(x).requires_grad  # no graph in the prefix
    assert model.model.layers[2].post_attention_layernorm(x).requires_grad


def test_embedding_trainable_means_no_forward_only_modules():
    """freeze_embeddings=False: frozen blocks sit above a trainable embedding and must pass dX down."""
    model = _model("llama")
    for layer in model.model.layers[:K]:
        layer.requires_grad_(False)
    report = install_kernels(model, resolve(model), K)
    assert not any(v.endswith("forward-only") for v in report.swapped.values())


def test_saved_model_is_plain_hf(tmp_path):
    ref, model, _ = _pair("llama")
    keys = list(ref.state_dict())
    assert list(model.state_dict()) == keys
    model.save_pretrained(tmp_path / "m")
    loaded = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "m").to(DEV)
    assert type(loaded) is type(ref) and list(loaded.state_dict()) == keys
    assert not [n for m in loaded.modules() for n in m.__dict__ if n.startswith("_ff") or n == "forward"]
    loaded.eval(), model.eval()
    ids = _batch()["input_ids"]
    with torch.no_grad():
        assert _close(loaded(input_ids=ids).logits, model(input_ids=ids).logits)


def test_remove_kernels_restores_and_double_install_refused():
    ref, model, report = _pair("phi3")
    with pytest.raises(RuntimeError, match="remove_kernels"):
        install_kernels(model, resolve(model), K)
    assert remove_kernels(model) == len(report.swapped)
    assert not [m for m in model.modules() if "forward" in m.__dict__ or "_ff_kernel" in m.__dict__]
    ref.train(), model.train()
    out = model(**_batch())
    assert out.logits is not None and torch.equal(out.loss, ref(**_batch()).loss)  # bitwise: torch again
    install_kernels(model, resolve(model), K)  # after removal a fresh install works


def test_signature_generate_and_deepcopy():
    ref, model, _ = _pair("llama")
    # Trainer reads the signature (loss kwargs, dataset columns), generate validates kwargs with it.
    assert inspect.signature(model.forward) == inspect.signature(ref.forward)
    ref.eval(), model.eval()
    ids = _batch()["input_ids"][:1, :5]
    kw = dict(max_new_tokens=4, do_sample=False, pad_token_id=0)
    assert torch.equal(model.generate(ids, **kw), ref.generate(ids, **kw))
    # A deep copy (continual-learning arms copy trunks) must run its own weights, not the original's.
    twin = copy.deepcopy(model)
    twin.train(), model.train()
    with torch.no_grad():
        twin.lm_head.weight.mul_(2.0)
        twin.model.norm.weight.add_(1.0)
    batch = _batch()
    assert abs(twin(**batch).loss.item() - model(**batch).loss.item()) > 1e-3
    assert twin.forward.model is twin and twin.model.norm.forward.__self__ is twin.model.norm


def test_changed_module_forward_stays_on_torch():
    """A norm class whose forward differs from what the kernel computes (e.g. a future transformers
    change) is caught by the probe and left on torch, so outputs still match."""
    base = type(_model("llama").model.norm)

    class ShiftedRMSNorm(base):
        def forward(self, hidden_states):
            return super().forward(hidden_states) + 0.5

    ref, model = _model("llama"), _model("llama")
    for m in (ref, model):
        m.model.norm.__class__ = ShiftedRMSNorm
    report = install_kernels(model, resolve(model), K)
    assert "model.norm" not in report.swapped and "model.layers.3.input_layernorm" in report.swapped
    assert any("ShiftedRMSNorm" in s for s in report.left_on_torch)
    assert isinstance(report, KernelReport) and "ShiftedRMSNorm" in str(report)
    ref.eval(), model.eval()
    ids = _batch()["input_ids"]
    with torch.no_grad():
        assert _close(model(input_ids=ids).logits, ref(input_ids=ids).logits)


def test_fused_loss_off_and_unrunnable_setups(monkeypatch):
    model = _model("llama")
    report = install_kernels(model, resolve(model), K, fused_loss=False)
    assert "forward" not in model.__dict__ and any("fused_loss=False" in s for s in report.left_on_torch)
    model.train()
    assert model(**_batch()).logits is not None
    interpret = os.environ.get("TRITON_INTERPRET")
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)  # a CPU model without the interpreter cannot run them
    cpu_model = make_model("llama")
    with pytest.raises(RuntimeError, match="kernels='auto' or 'torch'"):
        install_kernels(cpu_model, resolve(cpu_model), K)
    assert not [m for m in cpu_model.modules() if "forward" in m.__dict__]  # refused before touching anything
    if interpret is not None:
        monkeypatch.setenv("TRITON_INTERPRET", interpret)
    m = _model("llama", dtype=torch.float64)
    with pytest.raises(RuntimeError, match="float32/float16/bfloat16"):
        install_kernels(m, resolve(m), K)


def test_head_wrapped_after_install_falls_back_to_hf_loss():
    """The fused loss reads the head at call time: once something wraps it (an adapter), the model's
    own head + loss path runs instead of a stale fused one."""
    ref, model, _ = _pair("llama")
    model.lm_head = torch.nn.Sequential(model.lm_head)
    ref.train(), model.train()
    out, out_ref = model(**_batch()), ref(**_batch())
    assert out.logits is not None and _close(out.logits, out_ref.logits)
    assert abs(out.loss.item() - out_ref.loss.item()) <= RTOL * abs(out_ref.loss.item())


def test_lora_on_suffix_projections_through_apply_freeze():
    """PEFT: the swapped MLP calls the LoRA-wrapped projections, so adapters train exactly as on torch."""
    peft = pytest.importorskip("peft")
    from fastfreeze import FreezeConfig, apply_freeze
    from fastfreeze.integrations.peft import suffix_lora_kwargs

    def build(kernels):
        base = _model("llama")
        lora = peft.LoraConfig(r=4, target_modules=["q_proj", "gate_proj", "up_proj", "down_proj"], lora_dropout=0.0,
                               init_lora_weights=False, **suffix_lora_kwargs(base, K))
        model = peft.get_peft_model(base, lora)
        return model, apply_freeze(model, FreezeConfig(num_frozen_layers=K, kernels=kernels))

    (ref, _), (model, runtime) = build("torch"), build("triton")
    assert runtime.kernel_set == "triton" and any("swiglu/train x2" in n for n in runtime.report.notes)
    ref.train(), model.train()
    out_ref, out = ref(**_batch()), model(**_batch())
    assert out.logits is None and abs(out.loss.item() - out_ref.loss.item()) <= RTOL * abs(out_ref.loss.item())
    out_ref.loss.backward()
    out.loss.backward()
    trained = [(n, p_ref, p) for (n, p_ref), p in zip(ref.named_parameters(), model.parameters()) if p_ref.requires_grad]
    assert any("lora_" in n and ".mlp." in n for n, _, _ in trained)
    for name, p_ref, p in trained:
        assert _close(p.grad, p_ref.grad), name


def test_switched_off_ops_stay_on_torch_and_the_report_says_so():
    """The per-op switches (FreezeConfig rms_norm / swiglu, through `skip`) leave exactly that op on torch."""
    ref, model = _model("llama"), _model("llama")
    for m in (ref, model):
        seed_snippet_freeze(m, "llama", K)
    report = install_kernels(model, resolve(model), K, skip=("rms_norm",))
    assert not any(v.startswith("rms_norm") for v in report.swapped.values())
    assert report.counts()["swiglu/train"] == 2 and "FreezeConfig(rms_norm=False)" in str(report)
    ref.train(), model.train()
    out_ref, out = ref(**_batch()), model(**_batch())
    assert out.logits is None and abs(out.loss.item() - out_ref.loss.item()) <= RTOL * abs(out_ref.loss.item())
    with pytest.raises(ValueError, match="unknown op switches.*'rms_norm', 'swiglu'"):
        install_kernels(_model("llama"), resolve(model), K, skip=("rmsnorm",))


def test_switches_travel_from_the_config_through_apply_freeze():
    from fastfreeze import FreezeConfig, apply_freeze

    model = _model("llama")
    runtime = apply_freeze(model, FreezeConfig(num_frozen_layers=K, kernels="triton", swiglu=False, probe=False))
    note = next(n for n in runtime.report.notes if n.startswith("kernels=triton"))
    assert "swiglu" not in note.split("Left on torch")[0] and "FreezeConfig(swiglu=False)" in note
    assert "rms_norm/train" in note


def test_the_rms_norm_cast_mode_is_the_family_row_value(monkeypatch):
    """One value from FamilySpec.rms_norm to the kernel: the swapped norm passes it as cast_mode, as is."""
    import csrc_triton

    seen = []
    real = csrc_triton.rms_norm
    monkeypatch.setattr(csrc_triton, "rms_norm", lambda *a, **kw: (seen.append(kw["cast_mode"]), real(*a, **kw))[1])
    for family in ("llama", "gemma2"):
        model = _model(family)
        parts = resolve(model)  # (resolve runs the model once: before the spy's record is cleared)
        install_kernels(model, parts, K)
        seen.clear()
        model.model.norm(torch.randn(2, 3, model.config.hidden_size, device=DEV))
        assert seen == [parts.spec.rms_norm] == [{"llama": "llama", "gemma2": "gemma"}[family]]


def test_fused_loss_patches_nothing_per_step(monkeypatch):
    """The head's tap is bound once at install: a training step (forward with labels + backward) makes no
    per-instance patch, and leaves every module's __dict__ entries the same objects."""
    from fastfreeze import _patch

    _, model, _ = _pair("llama")
    model.train()
    model(**_batch()).loss.backward()  # a first step, in case anything were bound lazily
    before = {id(m): dict(m.__dict__) for m in model.modules()}
    calls = []
    for name in ("patch", "bind", "unpatch", "unpatch_all"):
        real = getattr(_patch, name)
        monkeypatch.setattr(_patch, name, lambda *a, _real=real, _name=name, **kw: (calls.append(_name), _real(*a, **kw))[1])
    out = model(**_batch())
    out.loss.backward()
    assert out.logits is None and calls == []
    for m in model.modules():
        assert {k: id(v) for k, v in m.__dict__.items()} == {k: id(v) for k, v in before[id(m)].items()}, type(m)


def _compiled_counts(model, batch):
    """Dynamo's frame / graph-break / graph counts for two compiled training steps (backend="eager": the
    counts come from Dynamo's tracing, the backend only runs the graphs)."""
    from torch._dynamo.utils import counters

    torch._dynamo.reset()
    counters.clear()
    compiled = torch.compile(model, backend="eager")
    try:
        for _ in range(2):
            out = compiled(**batch)
            out.loss.backward()
        return (counters["frames"]["total"], sum(counters["graph_break"].values()),
                counters["stats"]["unique_graphs"], out)
    finally:
        torch._dynamo.reset()
        counters.clear()


def test_compiled_training_step_with_the_fused_loss_has_no_graph_break(monkeypatch):
    """torch.compile(model) traces the fused-loss training forward in one frame and one graph, like the plain
    model (measured on torch 2.13 CPU: 1 frame, 0 graph breaks, 1 graph, before and after the head tap was
    bound at install instead of patched per step). csrc_triton.linear_cross_entropy is replaced by its torch
    reference here, and the other ops switched off, so the counts measure the install's own mechanism, not the
    interpreted Triton launches."""
    import csrc_triton

    def torch_lce(hidden, weight, labels, ignore_index=-100, bias=None, num_items_in_batch=None, softcap=None):
        logits = torch.nn.functional.linear(hidden, weight, bias).float()
        summed = torch.nn.functional.cross_entropy(logits, labels, ignore_index=ignore_index, reduction="sum")
        return summed / (num_items_in_batch if num_items_in_batch is not None else (labels != ignore_index).sum())

    monkeypatch.setattr(csrc_triton, "linear_cross_entropy", torch_lce)
    plain, model = _model("llama"), _model("llama")
    install_kernels(model, resolve(model), K, skip=("rms_norm", "swiglu"))
    plain.train(), model.train()
    batch = _batch()
    frames_plain, breaks_plain, graphs_plain, out_plain = _compiled_counts(plain, batch)
    frames, breaks, graphs, out = _compiled_counts(model, batch)
    assert out.logits is None and out_plain.logits is not None  # the fused path is the one compiled
    assert abs(out.loss.item() - out_plain.loss.item()) <= RTOL * abs(out_plain.loss.item())
    assert (breaks_plain, graphs_plain) == (0, 1)
    assert breaks == 0 and frames <= frames_plain and graphs <= graphs_plain, (frames, breaks, graphs)
