"""Memory model: gradients and AdamW state of the trainable parameters; activations shrink with checkpointing."""
from fastfreeze.estimate.memory import predict, weight_state_bytes
from fastfreeze.estimate.shape import ModelShape

SHAPE = ModelShape("t", layers=8, hidden=64, intermediate=256, heads=4, kv_heads=1, vocab=500, seq=32, batch=2)


def test_weight_state_is_one_gradient_and_two_moments_per_trainable_parameter():
    n = SHAPE.trainable_params(4)
    assert weight_state_bytes(n, 2) == {"gradient_bytes": 2 * n, "optimizer_bytes": 4 * n}


def test_checkpointing_and_freezing_hold_less():
    held = lambda kind, ckpt: predict(SHAPE, kind, 4, ckpt, fused=False)["held_bytes"]  # noqa: E731
    assert held("naive", True) < held("naive", False)
    assert held("ff-warm", True) < held("ff", True) < held("naive", True)
    assert held("full", False) > held("naive", False)
