"""FLOP model: its structure (what freezing, caching and checkpointing remove) and the prefix's share."""
import pytest

from fastfreeze.estimate.flops import arm_graph, predicted_ratio, prefix_flops, step_flops
from fastfreeze.estimate.shape import ModelShape

SHAPE = ModelShape("t", layers=12, hidden=512, intermediate=1376, heads=8, kv_heads=8, vocab=8192, seq=256, batch=8)


@pytest.mark.parametrize("ckpt", [False, True])
def test_a_cache_hit_saves_exactly_the_prefix_forward(ckpt):
    k = 6
    saved = step_flops(SHAPE, "ff", k, ckpt) - step_flops(SHAPE, "ff-warm", k, ckpt)
    assert saved == pytest.approx(prefix_flops(SHAPE, k))


def test_structure():
    r = lambda kind, ckpt=False: predicted_ratio(SHAPE, kind, 6, ckpt)  # noqa: E731
    assert r("naive") == r("ff") == 1.0 and r("ff-warm") < 1.0 < r("full")
    assert r("ff-warm", True) < r("ff", True) < 1.0
    assert arm_graph("ff-warm", 12, 6, True).recompute == 6
    with pytest.raises(ValueError, match="unknown arm"):
        arm_graph("nope", 12, 6, False)
