"""suggest-k's probe: one row per depth, frozen depths bitwise frozen, same batches, per-layer sizes and cosines."""
from __future__ import annotations

import copy

import datasets
import pytest
import torch
import transformers

from fastfreeze.lab.continual.evaluate import EvalSet
from fastfreeze.lab.suggest import ProbeSettings, run_probe
from fastfreeze.lab.suggest.probe import _batches, probe_arm, relative_update_sizes, update_cosines
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


def test_the_probe_runs_plain_torch_in_either_defaults(setup, monkeypatch):
    """suggest-k's probe freezes with freeze_bottom_layers and trains in its own AdamW loop: neither
    kernels="auto" nor the fused loss is involved, so the GPU defaults cannot change it (why it is not run
    in both defaults, docs/gpu-suite.md). Checked: under them no csrc_triton op runs and the result is bitwise
    the CPU defaults' one."""
    import csrc_triton

    d = setup
    batches = _batches(d["new_train"], d["collator"], d["settings"])
    cpu, _ = probe_arm(d["base"], 2, batches, d["old_set"], d["new_set"], d["settings"])
    calls = []
    for op in ("rms_norm", "swiglu", "linear_cross_entropy"):
        monkeypatch.setattr(csrc_triton, op, lambda *a, _op=op, **k: calls.append(_op))
    monkeypatch.setenv("FASTFREEZE_KERNELS", "triton")
    gpu, _ = probe_arm(d["base"], 2, batches, d["old_set"], d["new_set"], d["settings"])
    assert calls == [] and gpu == cpu
