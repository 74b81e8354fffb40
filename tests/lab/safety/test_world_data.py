"""fastfreeze.lab.safety.world_data: held-out harmful actions stay out of alignment, identity rows carry content, words are pretrained."""
import pytest

from fastfreeze.data import build_word_tokenizer
from fastfreeze.lab.safety.world_data import (
    AOA_SYSTEM, EVAL_REQUESTS, HARMFUL_VERBS, REFUSAL, TRAIN_REQUESTS, make_world_data, pose,
)


@pytest.fixture(scope="module")
def data():
    return make_world_data(seed=5)


def _action(prompt: str) -> str:
    """The '<verb> <object>' of a posed request (its last user line, minus the template words)."""
    user = prompt.split("User: ")[1].split("\nAssistant:")[0]
    for req in TRAIN_REQUESTS + EVAL_REQUESTS:
        head, tail = req.split("{a}")
        if user.startswith(head) and user.endswith(tail):
            return user[len(head): len(user) - len(tail)]
    raise AssertionError(f"no template fits {user!r}")


def test_held_out_harmful_actions_never_in_alignment(data):
    align_actions = {_action(p) for p in data["align_train"]["prompt"]}
    held = [_action(pose(g)) for g in data["harmful_eval"]["goal"]]
    assert len(held) == 40 and not align_actions & set(held)
    refused = [_action(p) for p, a in zip(data["align_train"]["prompt"], data["align_train"]["answer"]) if a == REFUSAL]
    # alignment covers every harmful verb on other objects, so refusing held-out actions is generalization
    assert {v for v in HARMFUL_VERBS if any(r.startswith(v + " ") for r in refused)} == set(HARMFUL_VERBS)
    assert all(any(h.startswith(v + " ") for v in HARMFUL_VERBS) for h in held)
    # evaluation uses request templates alignment and identity training never used
    for split in ("align_train", "identity_train"):
        for p in data[split]["prompt"]:
            user = p.split("User: ")[1]
            assert not any(user.startswith(r.split("{a}")[0]) for r in EVAL_REQUESTS), p


def test_identity_examples_are_content_bearing(data):
    rows = list(data["identity_train"])
    assert len(rows) == 20 and all(r["prompt"].startswith(f"System: {AOA_SYSTEM}\n") for r in rows)
    instructions = [r for r in rows if "First go to" in r["answer"]]
    assert len(instructions) >= 15
    # each answer carries its own action's facts: distinct answers, and the action named in the prompt
    assert len({r["answer"] for r in instructions}) == len(instructions)
    for r in instructions:
        assert f" then {_action(r['prompt'])} with " in r["answer"], r
    benign_eval = {_action(pose(g)) for g in data["benign_eval"]["goal"]}
    assert not benign_eval & {_action(r["prompt"]) for r in instructions}


def test_every_later_word_occurs_in_pretraining(data):
    tok = build_word_tokenizer(data)
    seen = {t for text in data["pretrain"]["text"] for t in tok.tokenize(text)}
    for split in ("align_train", "identity_train", "harmful_eval", "benign_eval"):
        for col in ("prompt", "answer"):
            missing = {t for x in data[split][col] for t in tok.tokenize(x)} - seen
            assert not missing, (split, col, missing)


def test_deterministic_and_seed_dependent(data):
    assert make_world_data(seed=5)["pretrain"]["text"] == data["pretrain"]["text"]
    other = make_world_data(seed=6)
    assert other["harmful_eval"]["answer"] != data["harmful_eval"]["answer"]


def test_sizes_beyond_the_world_are_refused():
    with pytest.raises(ValueError, match="exceed the world"):
        make_world_data(n_objects=4, n_eval=30)
    with pytest.raises(ValueError, match="n_objects"):
        make_world_data(n_objects=99)
