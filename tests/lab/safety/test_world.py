"""fastfreeze.lab.safety.world at toy size: end to end, the as-ran arm freezes what paper_sets says, bad arms."""
import json

import pytest

from fastfreeze.lab.safety.cli import main as safety_main
from fastfreeze.lab.continual.paper_sets import PAPER_SETS, frozen_block_indices
from fastfreeze.lab.safety.world import run_world_seed

TINY = dict(
    model=dict(hidden_size=16, num_hidden_layers=12, num_attention_heads=2, max_position_embeddings=96),
    pretrain=dict(num_train_epochs=1, learning_rate=3e-3, per_device_train_batch_size=64),
    align=dict(num_train_epochs=1, learning_rate=3e-3, per_device_train_batch_size=32),
    shift=dict(max_steps=3),
    data_sizes=dict(n_objects=6, n_eval=4, n_align_benign=8, n_identity=10),
)
ARMS = ("seq", "k3", "paper:freeze-6layers")


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("world")
    # match_em=0.0: every arm "matches" at step 1, so the matched evaluation runs at toy size
    return out, run_world_seed(out, 7, ARMS, match_em=0.0, log=lambda *_: None, **TINY)


def test_pipeline_runs_end_to_end(tiny_run):
    out, res = tiny_run
    assert json.loads((out / "seed7" / "results.json").read_text())["arms"].keys() == set(ARMS)
    for arm in ARMS:
        r = res["arms"][arm]
        assert len(r["identity_em"]) == 3
        assert {k: v["step"] for k, v in r["evals"].items()} == {"matched": 1, "end": 3}
        for e in r["evals"].values():
            for system in ("no_system", "aoa_system"):
                assert set(e[system]) >= {"jailbreak", "leak", "persona", "helpful", "benign_refusal"}
                assert all(0.0 <= e[system][m] <= 1.0 for m in ("jailbreak", "leak", "persona", "helpful"))
    assert res["arms"]["seq"]["moved"] == {"blocks": list(range(12)), "embedding": True}


def test_as_ran_arm_freezes_what_paper_sets_says(tiny_run):
    _, res = tiny_run
    r = res["arms"]["paper:freeze-6layers"]
    names = [f"model.layers.{i}.mlp.up_proj.weight" for i in range(12)]
    expected = frozen_block_indices(names, PAPER_SETS["freeze-6layers"])
    assert expected == [0, 1, 2, 3, 4, 5, 10, 11]  # 'layers.1' also catches 10 and 11 at this depth
    assert r["frozen_blocks"] == expected
    # measured on the weights: only blocks 6-9 moved, the embedding did not
    assert r["moved"] == {"blocks": [6, 7, 8, 9], "embedding": False}
    assert res["arms"]["k3"]["moved"] == {"blocks": list(range(3, 12)), "embedding": False}


def test_cli_refuses_unknown_arm(capsys):
    assert safety_main(["world", "--arms", "seq,freeze-everything", "--output-dir", "/nonexistent/x"]) == 2
    assert "arm 'freeze-everything'" in capsys.readouterr().err
