"""Per-instance patches: set an attribute (or bind a method) on one object, remembering what it replaced.

fastfreeze never patches a class or a module global: it replaces, on one model instance, the
`forward` (or `train`, or a marker attribute) of single modules. Every such change goes through
`patch` / `bind`, which records, per object, a stack of (owner, previous value, our value). So
undoing is generic (`unpatch_all(obj, owner)`), two owners can patch the same attribute (the later
one is undone first), and an attribute that someone else replaced after us is reported rather than
clobbered. The record lives in the object's `__dict__` (`_ff_patches`), so it follows
`copy.deepcopy` (bound methods are rebound to the copy) and disappears when the last patch is undone.

Usage:
    bind(module, "forward", my_forward, owner="prefix")    # module.forward -> my_forward bound to module
    replaced(module, "forward")                            # what it replaced on the instance (or None)
    unpatch_all(module, "prefix")                          # the instance is as before
"""
from __future__ import annotations

import types
from typing import Any, Callable

RECORD = "_ff_patches"  # instance attribute: {name: [(owner, had_previous, previous, ours), ...]}


def _stack(obj: Any, name: str) -> list:
    return obj.__dict__.get(RECORD, {}).get(name, [])


def patch(obj: Any, name: str, value: Any, owner: str) -> Any:
    """Set `obj.<name> = value` on the instance (class attributes untouched); returns `value`.

    Usage: ``patch(module, "_ff_state", state, owner="prefix")``
    """
    record = obj.__dict__.setdefault(RECORD, {})
    had = name in obj.__dict__
    record.setdefault(name, []).append((owner, had, obj.__dict__.get(name), value))
    # Straight into the instance dict: nn.Module.__setattr__ would do the same for a plain value, and
    # this also works for names nn.Module reserves (`forward`, `train`).
    obj.__dict__[name] = value
    return value


def bind(obj: Any, name: str, fn: Callable, owner: str) -> Any:
    """`patch` with `fn` bound to `obj` as a method (so `fn(self, ...)` sees the instance).

    Usage: ``bind(module, "train", always_eval, owner="prefix")``
    """
    return patch(obj, name, types.MethodType(fn, obj), owner)


def overridden(obj: Any, name: str) -> bool:
    """Whether `obj` carries its own `name` on the instance (by anyone: us, accelerate hooks, a user)."""
    return name in obj.__dict__


def patched(obj: Any, name: str, owner: str | None = None) -> bool:
    """Whether `obj.<name>` carries a patch (by `owner`, when given)."""
    return any(owner is None or entry[0] == owner for entry in _stack(obj, name))


def owners(obj: Any) -> set[str]:
    """Who has patched anything on `obj`."""
    return {entry[0] for stack in obj.__dict__.get(RECORD, {}).values() for entry in stack}


def replaced(obj: Any, name: str, owner: str | None = None) -> Any:
    """The instance-level value that the (first, or `owner`'s) patch of `obj.<name>` replaced; None
    when there was none (then the class attribute applies)."""
    for entry in _stack(obj, name):
        if owner is None or entry[0] == owner:
            return entry[2] if entry[1] else None
    return None


def ours(obj: Any, name: str, owner: str) -> Any:
    """The value `owner` patched in for `obj.<name>` (None when `owner` did not patch it)."""
    return next((entry[3] for entry in _stack(obj, name) if entry[0] == owner), None)


def unpatch(obj: Any, name: str, owner: str) -> bool:
    """Undo `owner`'s patch of `obj.<name>`; False when there is none. Raises RuntimeError if the
    attribute was replaced again afterwards by someone who did not use this module (e.g. accelerate
    hooks): undoing ours would silently drop theirs."""
    record = obj.__dict__.get(RECORD, {})
    stack = record.get(name, [])
    index = next((i for i in range(len(stack) - 1, -1, -1) if stack[i][0] == owner), None)
    if index is None:
        return False
    _, had, previous, value = stack[index]
    if index == len(stack) - 1:
        if obj.__dict__.get(name) is not value:
            raise RuntimeError(
                f"{type(obj).__name__}.{name} was replaced again after fastfreeze's {owner} patch (e.g. by "
                f"accelerate); remove that wrapper first, then undo the {owner} patch.")
        if had:
            obj.__dict__[name] = previous
        else:
            obj.__dict__.pop(name, None)
    else:  # a later patch sits on top of ours: it now replaces what ours replaced
        later = stack[index + 1]
        stack[index + 1] = (later[0], had, previous, later[3])
    del stack[index]
    if not stack:
        del record[name]
    if not record:
        obj.__dict__.pop(RECORD, None)
    return True


def unpatch_all(obj: Any, owner: str) -> int:
    """Undo every patch `owner` made on `obj` (latest first); returns how many."""
    names = [name for name, stack in obj.__dict__.get(RECORD, {}).items() for entry in stack if entry[0] == owner]
    count = 0
    for name in reversed(names):
        count += unpatch(obj, name, owner)
    return count
