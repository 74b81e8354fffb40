"""The compatibility sweep (benchmarks/compat/sweep.py, benchmarks/compat/check.py): the CI subset trains exactly like
the plain recipe, and the checker itself catches a fastfreeze arm that drifts or freezes something without saying so."""
from __future__ import annotations

import pytest
import torch

from benchmarks.compat import check as compat_check
from benchmarks.compat import sweep as compat
from fastfreeze.testing.tiny_models import build_model, tiny_config


@pytest.fixture(scope="module")
def ci_results():
    return compat.run_sweep(compat.select_types(subset="ci"), timeout=120)


@pytest.mark.slow
def test_ci_subset_has_no_difference_and_no_crash(ci_results):
    c = compat.counts(ci_results)
    bad = [f"{r['type']}: {r['class']}: {r['detail']}" for r in ci_results if r["class"] in ("different", "crash")]
    assert not bad, f"{c}\n" + "\n".join(bad)
    assert c["exact"] + c["exact without cache"] > 0


def test_ci_subset_is_registered_and_named():
    registered = set(compat.registered_types())
    chosen = compat.select_types(subset="ci")
    assert chosen and set(chosen) <= registered
    assert {"llama", "gpt2", "mixtral"} <= set(chosen)


def _perturb_after_construction(monkeypatch, fn):
    """Run `fn(trainer)` right after every FastFreezeTrainer of the sweep is constructed."""
    cls = compat_check._ff_trainer_class()
    original = cls.__init__

    def init(self, *args, **kwargs):
        original(self, *args, **kwargs)
        fn(self)

    monkeypatch.setattr(cls, "__init__", init)


def test_checker_fails_when_a_trainable_weight_differs(monkeypatch):
    def nudge(trainer):
        p = [p for p in trainer.model.parameters() if p.requires_grad][-1]
        with torch.no_grad():
            p.add_(1e-3)

    _perturb_after_construction(monkeypatch, nudge)
    r = compat.check_type("llama", timeout=120)
    assert r["class"] == "different", r
    assert "param" in r["detail"] or "loss" in r["detail"]


def test_checker_fails_on_a_param_frozen_without_a_word(monkeypatch):
    def freeze_norm(trainer):
        trainer.model.model.norm.weight.requires_grad_(False)
        if hasattr(trainer.freeze_report, "extra_frozen"):
            trainer.freeze_report.extra_frozen = {}

    _perturb_after_construction(monkeypatch, freeze_norm)
    r = compat.check_type("llama", timeout=120)
    assert r["class"] == "different", r
    assert "frozen without a word: model.norm.weight" in r["detail"]


def test_stated_extra_freeze_counts_as_stated(monkeypatch):
    def freeze_norm_and_say_so(trainer):
        trainer.model.model.norm.weight.requires_grad_(False)
        trainer.freeze_report.extra_frozen = {"model.norm": "test: stated on purpose"}

    _perturb_after_construction(monkeypatch, freeze_norm_and_say_so)
    r = compat.check_type("llama", timeout=120)
    assert r["class"] == "exact", r
    assert r["extras"] == {"model.norm": "test: stated on purpose"}


def test_recipe_finds_the_shallowest_block_list():
    model = build_model(tiny_config("mixtral"))
    path, _ = compat_check.block_list(model)
    assert path == "model.layers"
    recipe, note = compat_check.recipe_frozen(model, 2)
    assert note == "" and "model.embed_tokens.weight" in recipe
    assert any(n.startswith("model.layers.1.") for n in recipe)
    assert not any(n.startswith("model.layers.2.") for n in recipe)


def test_report_files(tmp_path):
    results = [{"type": "llama", "class": "exact", "detail": "cache hits 12", "extras": {}},
               {"type": "x", "class": "crash", "detail": "ValueError: a|b @ f.py:1", "extras": {"m": "why"}}]
    info = compat.meta(1.0, ["llama", "x"], 120)
    js, md = compat.write_report(results, info, tmp_path)
    text = md.read_text()
    assert js.name == f"compat_transformers-{info['transformers']}.json"
    assert "| x | crash | m | ValueError: a\\|b @ f.py:1 |" in text and "crash 1" in text
