"""fastfreeze.verify.measure: the two-copies memory check, weight snapshots in memory or on disk, step times."""
from __future__ import annotations

import pytest
import torch

import fastfreeze.verify.measure as verify_measure
from fastfreeze.verify import VerifyError
from fastfreeze.verify.measure import StepTimer, WeightStore
from tests._helpers import make_model
from tests._helpers import run_verify as _verify


def test_refuses_when_two_copies_do_not_fit(monkeypatch):
    monkeypatch.setattr(verify_measure, "available_bytes", lambda device: 10_000)
    with pytest.raises(VerifyError, match="--sequential"):
        _verify("llama")
    assert _verify("llama", steps=2, sequential=True).passed  # no second copy: no refusal


@pytest.mark.parametrize("on_disk", [False, True])
def test_weight_store_keeps_tied_names_once_and_restores_in_place(tmp_path, on_disk):
    model = make_model("gemma2")  # tied head: lm_head.weight is model.embed_tokens.weight
    named = list(model.named_parameters(remove_duplicate=False))
    store = WeightStore(named, path=str(tmp_path / "w.safetensors") if on_disk else None, clone=True)
    assert {"lm_head.weight", "model.embed_tokens.weight"} <= store.names
    assert store.alias["lm_head.weight"] == store.alias["model.embed_tokens.weight"]
    before = {n: p.detach().clone() for n, p in named}
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
            p.requires_grad_(False)
    store.restore(model, None)
    assert all(torch.equal(p, before[n]) and p.requires_grad for n, p in model.named_parameters())
    assert torch.equal(store.get("lm_head.weight"), before["model.embed_tokens.weight"])


def test_step_timer_median_skips_the_warm_up_step():
    timer = StepTimer(cuda=False)
    timer.times = [5.0, 1.0, 3.0, 2.0]
    assert timer.median() == 2.0
    assert StepTimer(cuda=False).median() != StepTimer(cuda=False).median()  # nan before any step

