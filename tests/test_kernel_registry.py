"""The kernel registry: each entry matches its modules, builds its forwards from the family fact, has a switch."""
from __future__ import annotations

import dataclasses

import pytest
import torch

from fastfreeze.config import KERNEL_SWITCHES, FreezeConfig, FreezeConfigError
from fastfreeze.families import FAMILIES, resolve
from fastfreeze.kernel_registry import ENTRIES
from tests._helpers import make_model
from tests._kernel_fixtures import _fresh_seed, nan_buffers  # noqa: F401  (autouse fixtures of the kernel tests)


def _entry(name):
    return next(e for e in ENTRIES if e.name == name)


def test_every_entry_has_a_freeze_config_switch():
    """A user bisects with FreezeConfig(<switch>=False): each registry op has one bool field (the fused
    loss, not a module swap, has its own), and no switch is left without an op."""
    fields = {f.name: f for f in dataclasses.fields(FreezeConfig)}
    switches = [e.switch for e in ENTRIES]
    assert len(set(switches)) == len(switches) == len(ENTRIES)
    assert sorted(switches + ["fused_loss"]) == sorted(KERNEL_SWITCHES)
    for switch in KERNEL_SWITCHES:
        assert fields[switch].default is True, switch
        with pytest.raises(FreezeConfigError, match=f"{switch}=False"):
            FreezeConfig(num_frozen_layers=1, **{switch: "off"})


@pytest.mark.parametrize("family, module_path, name", [
    ("llama", "model.norm", "rms_norm"),
    ("llama", "model.layers.0.mlp", "swiglu"),
    ("phi3", "model.layers.0.mlp", "swiglu"),  # the fused gate_up layout
    ("gemma2", "model.layers.0.post_feedforward_layernorm", "rms_norm"),
    ("llama", "model.layers.0.self_attn", None),
])
def test_entries_match_their_modules_only(family, module_path, name):
    """Exactly one entry claims each norm / MLP, with the probe width (the hidden size); others none."""
    model = make_model(family)
    spec, module = FAMILIES[family], model.get_submodule(module_path)
    matched = [(e.name, e.matches(module, e.fact(spec))) for e in ENTRIES if e.fact(spec) is not None]
    expected = [] if name is None else [(name, model.config.hidden_size)]
    assert [(n, w) for n, w in matched if w is not None] == expected


def test_families_without_the_module_have_no_fact():
    """GPT-2 / GPT-NeoX: LayerNorm and GELU, so neither op applies (and the report line says why)."""
    for family in ("gpt2", "gpt_neox"):
        assert all(e.fact(FAMILIES[family]) is None for e in ENTRIES)
    assert _entry("swiglu").fact(FAMILIES["gemma2"]) is None  # GeGLU
    assert _entry("rms_norm").torch_note and _entry("swiglu").torch_note


def test_forwards_are_built_once_per_fact_and_the_prefix_variant_saves_no_graph():
    entry = _entry("rms_norm")
    train, forward_only = entry.forwards("gemma")
    assert entry.forwards("gemma") == (train, forward_only) and entry.forwards("llama")[0] is not train
    norm = resolve(make_model("gemma2")).final_norm
    x = torch.randn(2, 3, norm.weight.shape[0], requires_grad=True)
    assert train(norm, x).requires_grad and not forward_only(norm, x).requires_grad
    with torch.no_grad():  # fp32: the kernel's other reduction order moves a few ulps (~1e-7), far below 1e-5
        torch.testing.assert_close(train(norm, x), type(norm).forward(norm, x), rtol=1e-5, atol=1e-5)
