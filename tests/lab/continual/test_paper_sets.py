"""The paper's as-ran (substring) freeze sets: the 28-of-32 finding, and the rule's edges."""
import pytest
import torch

from fastfreeze.lab.continual.paper_sets import (
    PAPER_SETS,
    apply_substring_freeze,
    block_index,
    freeze_record,
    frozen_block_indices,
    substring_frozen_names,
)


def _llama_names(n_layers: int) -> list[str]:
    names = ["model.embed_tokens.weight", "model.norm.weight", "lm_head.weight"]
    for i in range(n_layers):
        names += [f"model.layers.{i}.self_attn.q_proj.weight", f"model.layers.{i}.mlp.up_proj.weight"]
    return names


def test_freeze_6layers_on_32_blocks_freezes_28():
    blocks = frozen_block_indices(_llama_names(32), PAPER_SETS["freeze-6layers"])
    assert blocks == list(range(0, 6)) + list(range(10, 32))
    assert len(blocks) == 28


def test_freeze_3layers_on_32_blocks_leaves_3_to_9_and_30_31():
    blocks = frozen_block_indices(_llama_names(32), PAPER_SETS["freeze-3layers"])
    assert sorted(set(range(32)) - set(blocks)) == [3, 4, 5, 6, 7, 8, 9, 30, 31]


def test_toy_depth_is_index_exact_below_ten_layers():
    # With fewer than 10 blocks no "layers.1" prefix collides, so the as-ran set equals the exact one.
    assert frozen_block_indices(_llama_names(8), PAPER_SETS["freeze-6layers"]) == list(range(6))


def test_embedding_frozen_head_and_norm_not():
    frozen = set(substring_frozen_names(_llama_names(32), PAPER_SETS["freeze-6layers"]))
    assert "model.embed_tokens.weight" in frozen
    assert "lm_head.weight" not in frozen and "model.norm.weight" not in frozen


def test_apply_sets_requires_grad_and_refuses_typos():
    model = torch.nn.ModuleDict({"layers": torch.nn.ModuleList([torch.nn.Linear(2, 2) for _ in range(12)])})
    frozen = apply_substring_freeze(model, ["layers.1"])
    assert {n.split(".")[1] for n in frozen} == {"1", "10", "11"}
    assert sum(not p.requires_grad for p in model.parameters()) == 6
    with pytest.raises(ValueError, match="match no parameter"):
        apply_substring_freeze(model, ["embed_tokens"])
    with pytest.raises(ValueError, match="non-empty"):
        apply_substring_freeze(model, [""])


def test_freeze_record_says_blocks_and_embedding():
    names = _llama_names(12)
    rec = freeze_record(substring_frozen_names(names, PAPER_SETS["freeze-3layers"]), PAPER_SETS["freeze-3layers"])
    assert rec["frozen_blocks"] == [0, 1, 2, 10, 11] and rec["embedding_frozen"] is True
    assert rec["frozen_parameters"] == 1 + 2 * 5


def test_block_index_reads_the_decoder_block():
    assert block_index("model.layers.12.mlp.up_proj.weight") == 12
    assert block_index("gpt_neox.layers.3.attention.dense.weight") == 3
    assert block_index("model.embed_tokens.weight") is None and block_index("lm_head.weight") is None
