"""The contract: FastFreezeTrainer trains exactly like the seed snippet + plain Trainer, for every family."""
from __future__ import annotations

import pytest
import torch

from fastfreeze import FreezeConfig, UnsupportedModelError, apply_freeze
from fastfreeze._hf_compat import checkpointing_training_kwargs
from tests._helpers import FAMILIES, assert_losses_close, make_model
from tests.parity.harness import max_rel_diff, run_arm

# fp32 on CPU; both arms run the same ops on the same data. The only freedom is summation order
# inside kernels for differently shaped calls, which stays far below 1e-5 relative in fp32.
RTOL = 1e-5


@pytest.mark.parametrize("gc", [False, True], ids=["no-ckpt", "ckpt"])
@pytest.mark.parametrize("family", FAMILIES)
def test_parity_with_seed_snippet(family, gc, tmp_path):
    k = 2
    ref = run_arm(family, k, "ref", str(tmp_path / "ref"), gc=gc)
    ff = run_arm(family, k, "ff", str(tmp_path / "ff"), gc=gc)

    assert len(ff["losses"]) == len(ref["losses"]) == 40  # 20 optimizer steps x grad accumulation 2
    assert_losses_close(ff["losses"], ref["losses"], rtol=RTOL)  # fp32, same ops in both arms (RTOL above)

    initial = make_model(family).state_dict()
    for name, p_ref in ref["params"].items():
        p_ff = ff["params"][name]
        if ref["model"].get_parameter(name).requires_grad:
            assert max_rel_diff(p_ff, p_ref) <= RTOL, name
            assert not torch.equal(p_ref, initial[name]), f"{name} should have trained"
        else:
            assert torch.equal(p_ff, p_ref) and torch.equal(p_ff, initial[name]), f"frozen {name} changed"
    assert abs(ff["eval_loss"] - ref["eval_loss"]) <= RTOL * abs(ref["eval_loss"])


@pytest.mark.parametrize("family", ["llama", "gpt2"])
def test_parity_left_padding_and_k_edges(family, tmp_path):
    """Left padding (positions shift), k=0 (embedding only) and k=L (only norm + head train)."""
    for k in (0, 4):
        ref = run_arm(family, k, "ref", str(tmp_path / f"ref{k}"), padding_side="left", steps=6, evaluate=False)
        ff = run_arm(family, k, "ff", str(tmp_path / f"ff{k}"), padding_side="left", steps=6, evaluate=False)
        assert_losses_close(ff["losses"], ref["losses"], rtol=RTOL)  # fp32, same ops in both arms (RTOL above)
        for name, p in ref["params"].items():
            assert max_rel_diff(ff["params"][name], p) <= RTOL, name


def test_no_backward_through_prefix(tmp_path):
    """Backward hooks on every prefix module must never fire under fastfreeze, and they do fire in the
    reference with activation checkpointing (HF makes the embedding output require grad there), so
    this test can fail."""
    def count_backward(model, names):
        calls = []
        for name in names:
            model.get_submodule(name).register_full_backward_hook(lambda m, gi, go, n=name: calls.append(n))
        return calls

    prefix_names = ["model.embed_tokens", "model.layers.0", "model.layers.1"]
    ref_model = make_model("llama")
    ref_calls = count_backward(ref_model, prefix_names)
    run_arm("llama", 2, "ref", str(tmp_path / "ref"), gc=True, steps=2, model=ref_model, evaluate=False)
    assert ref_calls, "reference should run backward through frozen layers under checkpointing"

    for gc in (False, True):
        model = make_model("llama")
        calls = count_backward(model, prefix_names)
        res = run_arm("llama", 2, "ff", str(tmp_path / f"ff{gc}"), gc=gc, steps=2, model=model, evaluate=False)
        assert calls == []
        assert all(p.grad is None for p in res["trainer"].prefix.parameters())
        opt_params = {id(p) for g in res["trainer"].optimizer.param_groups for p in g["params"]}
        assert opt_params == {id(p) for p in model.parameters() if p.requires_grad}


def _with_dropout(p: float):
    model = make_model("gpt2")
    for m in model.modules():
        if isinstance(m, torch.nn.Dropout):
            m.p = p
    return model


def test_stochastic_prefix_is_refused_unless_accepted():
    """Plain freezing keeps dropout active in frozen layers; the eval-mode prefix would silently differ."""
    with pytest.raises(UnsupportedModelError, match="draw random numbers in training"):
        apply_freeze(_with_dropout(0.5), FreezeConfig(num_frozen_layers=2))
    rt = apply_freeze(_with_dropout(0.5), FreezeConfig(num_frozen_layers=2, allow_eval_prefix=True))
    assert rt.probe.eval_prefix_differs and "run in eval mode" in str(rt.probe)
    rt = apply_freeze(_with_dropout(0.0), FreezeConfig(num_frozen_layers=2))
    assert not rt.probe.eval_prefix_differs


def test_prefix_stays_in_eval_mode_and_skips_dropout(tmp_path):
    """With dropout on (accepted knowingly), the prefix output is deterministic across training steps."""
    model = _with_dropout(0.5)
    res = run_arm("gpt2", 2, "ff", str(tmp_path / "ff"), steps=1, model=model, evaluate=False,
                  freeze_config=FreezeConfig(num_frozen_layers=2, allow_eval_prefix=True))
    trainer = res["trainer"]
    model.train()
    prefix = trainer.prefix
    assert all(not m.training for m in prefix.modules for m in m.modules())
    assert model.transformer.h[3].training  # suffix trains
    batch = {"input_ids": torch.randint(1, 90, (2, 7))}
    outs = []
    for _ in range(2):
        with prefix.capture() as cap:
            model(**batch)
        outs.append(cap.boundary)
    assert torch.equal(outs[0], outs[1])
    assert not outs[0].requires_grad


def test_parity_with_reentrant_checkpointing(tmp_path):
    """Reentrant checkpointing drops parameter grads of a block whose inputs need no grad (HF issue
    21381); the boundary is made to require grad in that mode, so the first trainable block still learns."""
    extra = checkpointing_training_kwargs(True, use_reentrant=True)
    ref = run_arm("llama", 2, "ref", str(tmp_path / "ref"), gc=True, steps=4, evaluate=False, **extra)
    ff = run_arm("llama", 2, "ff", str(tmp_path / "ff"), gc=True, steps=4, evaluate=False, **extra)
    initial = make_model("llama").state_dict()
    first_trainable = "model.layers.2.mlp.down_proj.weight"
    assert not torch.equal(ff["params"][first_trainable], initial[first_trainable])
    assert_losses_close(ff["losses"], ref["losses"], rtol=RTOL)  # fp32, same ops in both arms (RTOL above)
    for name, p in ref["params"].items():
        assert max_rel_diff(ff["params"][name], p) <= RTOL, name
