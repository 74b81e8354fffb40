"""suggest-k: the probe (one row per depth, frozen depths bitwise frozen), the rule on constructed evidence, the comparison."""
from __future__ import annotations

import copy

import datasets
import pytest
import torch
import transformers

from fastfreeze.continual.evaluate import EvalSet
from fastfreeze.continual.suggest import ProbeSettings, run_probe, suggest
from fastfreeze.continual.suggest.compare import compare
from fastfreeze.continual.suggest.probe import _batches, probe_arm, relative_update_sizes, update_cosines
from fastfreeze.data import PaddingCollator, build_word_tokenizer, tokenize_qa

LAYERS = 3


def tiny_task_data() -> datasets.DatasetDict:
    """Two QA tasks on made-up people: 'Who is pN ?' -> ' aM' (task 0) / ' bM' (task 1)."""
    def split(task: int, people: range) -> datasets.Dataset:
        word = "ab"[task]
        return datasets.Dataset.from_dict({
            "prompt": [f"Who is p{i} ?\nAnswer:" for i in people],
            "answer": [f" {word}{i % 5}" for i in people],
            "attribute": ["who"] * len(people),
        })

    return datasets.DatasetDict({"task0_train": split(0, range(0, 24)), "task0_test": split(0, range(24, 32)),
                                 "task1_train": split(1, range(32, 56)), "task1_test": split(1, range(56, 64))})


def tiny_model(tok, seed: int = 0):
    cfg = transformers.LlamaConfig(vocab_size=len(tok), hidden_size=16, intermediate_size=32, num_hidden_layers=LAYERS,
                                   num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=32,
                                   pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id,
                                   bos_token_id=tok.eos_token_id, tie_word_embeddings=False)
    torch.manual_seed(seed)
    return transformers.AutoModelForCausalLM.from_config(cfg)


@pytest.fixture(scope="module")
def setup():
    dsd = tiny_task_data()
    tok = build_word_tokenizer(dsd)
    tok.pad_token = tok.pad_token or tok.eos_token
    old = tokenize_qa(dsd["task0_train"], tok, 16)
    new = tokenize_qa(dsd["task1_train"], tok, 16)
    new_train = new.select_columns(["input_ids", "attention_mask", "labels"])
    previous = tiny_model(tok)
    base = copy.deepcopy(previous)
    with torch.no_grad():  # a stand-in "old task" update, so the orthogonality columns have something to compare
        for p in base.parameters():
            p.add_(torch.randn_like(p) * 0.01)
    s = ProbeSettings(steps=4, learning_rate=1e-2, batch_size=8, eval_examples=None)
    return dict(tok=tok, base=base, previous=previous, new_train=new_train, settings=s,
                old_set=EvalSet(old, tok.pad_token_id), new_set=EvalSet(new, tok.pad_token_id),
                collator=PaddingCollator(tok.pad_token_id))


def test_probe_has_one_row_per_depth_and_a_per_layer_table(setup):
    d = setup
    result = run_probe(d["base"], d["previous"], d["new_train"], d["old_set"], d["new_set"], d["collator"],
                       d["settings"], log=lambda m: None)
    assert [a["k"] for a in result["arms"]] == [None, 0, 1, 2, 3]
    assert all(a["frozen_unchanged"] for a in result["arms"])
    trainable = [a["trainable_params"] for a in result["arms"]]
    assert trainable == sorted(trainable, reverse=True) and len(set(trainable)) == len(trainable)
    assert [r["layer"] for r in result["per_layer"]] == ["emb", "0", "1", "2", "head"]
    for r in result["per_layer"]:
        assert r["new_update"] > 0 and r["old_update"] > 0 and -1 <= r["flat_cos"] <= 1
        assert (r["mean_cos"] is None) == (r["layer"] == "head")  # lm_head is not a decoder-layer matrix
    assert result["new_loss_before"] > next(a for a in result["arms"] if a["k"] is None)["new_loss"]


@pytest.mark.parametrize("k", [0, 2, 3])
def test_frozen_depths_are_bitwise_unchanged_and_the_rest_moves(setup, k):
    d = setup
    batches = _batches(d["new_train"], d["collator"], d["settings"])
    rec, model = probe_arm(d["base"], k, batches, d["old_set"], d["new_set"], d["settings"])
    base = dict(d["base"].named_parameters())
    for name, p in model.named_parameters():
        frozen = "embed_tokens" in name or any(f"layers.{i}." in name for i in range(k))
        same = torch.equal(p.detach(), base[name].detach())
        assert same == frozen, (name, k)
    assert rec["frozen_unchanged"] and rec["k"] == k


def test_probes_see_the_same_batches(setup):
    d = setup
    a = _batches(d["new_train"], d["collator"], d["settings"])
    b = _batches(d["new_train"], d["collator"], d["settings"])
    assert len(a) == 4 and all(torch.equal(x["input_ids"], y["input_ids"]) for x, y in zip(a, b))


def test_update_sizes_and_cosines_by_group():
    w0 = {"model.embed_tokens.weight": torch.ones(2, 2), "model.layers.0.mlp.w": torch.ones(2, 2),
          "lm_head.weight": torch.ones(2, 2)}
    w1 = {n: t + (1.0 if "layers.0" in n else 0.0) for n, t in w0.items()}
    w2 = {n: t - (1.0 if "layers.0" in n else 0.0) + (0.5 if "lm_head" in n else 0.0) for n, t in w1.items()}
    emb = {"model.embed_tokens.weight"}
    sizes = relative_update_sizes(w0, w1, emb)
    assert sizes == {"emb": 0.0, "0": 1.0, "head": 0.0}
    cos = update_cosines(w0, w1, w2, emb)
    assert cos["0"] == pytest.approx(-1.0) and cos["emb"] is None and cos["head"] is None


def _probe(retention: list[float], losses: list[float], before: float = 4.0) -> dict:
    """A constructed probe result: SEQ then k = 0..len-2, with old-task first-token accuracy and new-task loss."""
    ks = [None, *range(len(retention) - 1)]
    arms = [{"k": k, "old_first_token": r, "old_exact_match": r, "new_loss": l} for k, r, l in zip(ks, retention, losses)]
    return {"new_loss_before": before, "arms": arms, "old_before": {"first_token": 1.0, "exact_match": 1.0}}


def test_rule_picks_the_smallest_depth_that_protects_as_well_as_any_that_learns():
    # learning shares (4 - loss) / 2: SEQ 1.0, k0 0.95, k1 0.85, k2 0.70, k3 0.30
    p = _probe([0.40, 0.50, 0.90, 0.95, 0.99], [2.0, 2.1, 2.3, 2.6, 3.4])
    s = suggest(p, learn_min=0.6, tie=0.02)
    assert s["k"] == 2  # k3 protects most but learns too little; k1 is 5 points below k2
    assert [r["eligible"] for r in s["rows"]] == [False, True, True, True, False]
    assert suggest(p, learn_min=0.6, tie=0.06)["k"] == 1  # within the tie the shallower depth wins
    assert suggest(p, learn_min=0.2, tie=0.02)["k"] == 3  # k3 is eligible at a lower threshold
    assert suggest(p, learn_min=0.99, tie=0.02)["k"] == 0 and "no depth" in suggest(p, 0.99, 0.02)["reason"]


def test_rule_refuses_a_probe_that_learned_nothing():
    with pytest.raises(ValueError, match="raise --steps or --learning-rate"):
        suggest(_probe([0.4, 0.5], [4.0, 4.1]))


def _results(arms: dict) -> dict:
    """A runner-shaped results.json: arm -> (k or None, accuracy matrix)."""
    out = {}
    for name, (k, R) in arms.items():
        strat = {"name": "seq"} if k is None else {"name": "freeze", "num_frozen_layers": k, "freeze_embeddings": True}
        out[name] = {"strategy": strat, "accuracy_matrix": R}
    # not comparable: other methods, and freeze sets matched by name patterns (the paper's as-ran sets)
    out["replay"] = {"strategy": {"name": "replay"}, "accuracy_matrix": [[0.9, None], [0.9, 0.9]]}
    out["asran"] = {"strategy": {"name": "paper_freeze", "patterns": ["layers.1"]}, "accuracy_matrix": [[0.9, None], [0.9, 0.9]]}
    out["asran2"] = {"strategy": {"name": "freeze", "num_frozen_layers": 1, "patterns": ["layers.1"]},
                     "accuracy_matrix": [[0.9, None], [0.9, 0.9]]}
    return {"arms": out}


def test_compare_finds_the_best_arms_both_ways():
    res = _results({"seq": (None, [[0.9, 0.0], [0.30, 0.99]]), "freeze1": (1, [[0.9, 0.0], [0.45, 0.96]]),
                    "freeze2": (2, [[0.9, 0.0], [0.50, 0.84]])})
    c = compare(1, res)
    assert [r["arm"] for r in c["rows"]] == ["seq", "freeze1", "freeze2"]
    assert c["verdict"]["among_best_acc"] and c["verdict"]["among_best_retention"]
    assert c["verdict"]["best_retention_arms"] == ["freeze1"]  # freeze2 keeps more but learns 15 points less
    c2 = compare(2, res)
    assert c2["verdict"]["best_acc_arms"] == ["freeze1"] and not c2["verdict"]["among_best_acc"]
    assert not c2["verdict"]["among_best_retention"]
    assert not compare(3, res)["verdict"]["arm_with_k"]
    with pytest.raises(ValueError, match="no SEQ arm"):
        compare(1, {"arms": {k: v for k, v in res["arms"].items() if k != "seq"}})
