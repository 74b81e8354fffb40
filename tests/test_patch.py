"""fastfreeze._patch: per-instance patches record what they replaced, undo generically, and survive deepcopy."""
from __future__ import annotations

import copy

import pytest
from torch import nn

from fastfreeze import _patch


def _doubled(self, x):
    return 2 * type(self).forward(self, x)


def test_bind_and_unpatch_restore_the_instance():
    m = nn.Linear(2, 2)
    before = dict(m.__dict__)
    _patch.bind(m, "forward", _doubled, owner="a")
    _patch.patch(m, "_ff_marker", 3, owner="a")
    assert m.forward.__func__ is _doubled and m.forward.__self__ is m and m._ff_marker == 3
    assert _patch.patched(m, "forward", "a") and not _patch.patched(m, "forward", "b") and _patch.owners(m) == {"a"}
    assert _patch.unpatch_all(m, "a") == 2
    assert m.__dict__ == before  # not even the record is left behind


def test_replaced_is_the_previous_instance_override_and_comes_back():
    m = nn.Linear(2, 2)
    hook = lambda x: x  # noqa: E731 - stands in for an accelerate hook already on the instance
    m.forward = hook
    assert _patch.replaced(m, "forward") is None
    _patch.bind(m, "forward", _doubled, owner="a")
    assert _patch.replaced(m, "forward", "a") is hook
    _patch.unpatch(m, "forward", "a")
    assert m.forward is hook


def test_two_owners_stack_and_undo_in_any_order():
    m = nn.Linear(2, 2)
    first = _patch.bind(m, "forward", _doubled, owner="kernels")
    second = _patch.bind(m, "forward", _doubled, owner="prefix")
    assert m.forward is second and _patch.replaced(m, "forward", "prefix") is first
    assert _patch.unpatch(m, "forward", "kernels")  # the lower one first: the top one now replaces the original
    assert m.forward is second and _patch.replaced(m, "forward", "prefix") is None
    assert _patch.unpatch(m, "forward", "prefix")
    assert "forward" not in m.__dict__ and not _patch.owners(m)
    assert not _patch.unpatch(m, "forward", "prefix")  # nothing left to undo


def test_replaced_again_by_someone_else_is_refused():
    m = nn.Linear(2, 2)
    _patch.bind(m, "forward", _doubled, owner="kernels")
    m.forward = lambda x: x  # e.g. accelerate wraps it after us, without this module
    with pytest.raises(RuntimeError, match="replaced again after fastfreeze's kernels patch"):
        _patch.unpatch_all(m, "kernels")
    assert _patch.patched(m, "forward", "kernels")  # nothing was undone half-way


def test_deepcopy_rebinds_patches_to_the_copy():
    m = nn.Sequential(nn.Linear(2, 2))
    _patch.bind(m[0], "forward", _doubled, owner="a")
    twin = copy.deepcopy(m)
    assert twin[0].forward.__self__ is twin[0] and _patch.ours(twin[0], "forward", "a") is twin[0].forward
    assert _patch.unpatch_all(twin[0], "a") == 1 and "forward" not in twin[0].__dict__
    assert _patch.patched(m[0], "forward", "a")  # the original keeps its own
