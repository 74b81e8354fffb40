"""fastfreeze.lab.safety.world at toy size: end to end, the as-ran arm freezes what paper_sets says, bad arms;
the matched point at exactly 14 of 20 identity rows."""
import json

import pytest
import torch

import fastfreeze.lab.safety.world as world_mod

from fastfreeze.lab.safety.cli import main as safety_main
from fastfreeze.lab.continual.paper_sets import PAPER_SETS, frozen_block_indices
from fastfreeze.lab.safety.world import MATCH_EM, _ShiftWatch, run_world_seed

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


class _Step:
    def __init__(self, step):
        self.global_step = step


def test_the_matched_point_is_the_first_step_with_fourteen_of_twenty_right(monkeypatch):
    """MATCH_EM 0.7 of the 20 identity rows is 14 rows. Compared as a float32 mean, 14 of 20 is 0.69999999
    and the match fell to the first step with 15 (every committed "matched" row of 2026-12-03 was at 75-80%)."""
    counts = iter([12, 13, 14, 15, 20])

    def fake_evaluate(model, evalset):
        c = next(counts)
        return {"exact_match": torch.tensor([1.0] * c + [0.0] * (20 - c)).mean().item(), "correct": c, "n": 20}

    monkeypatch.setattr(world_mod, "evaluate", fake_evaluate)
    watch, model = _ShiftWatch(evalset=None, match_em=MATCH_EM), torch.nn.Linear(2, 2)
    for step in range(1, 6):
        watch.on_step_end(None, _Step(step), None, model=model)
    assert MATCH_EM == 0.7 and watch.snapshots["matched"][0] == 3
    assert watch.history[2] < 0.7  # the float mean at the matched step: the compare that missed it
