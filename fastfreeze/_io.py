"""Atomic writes (text, JSON, bytes, directories): a reader sees the old file or the new one, never half of it.

Every file fastfreeze writes goes through here: written to a hidden temporary name in the same
directory, flushed and fsynced, then published with `os.replace`; on any error the temporary is
removed and the destination is left as it was.

Usage:
    write_text(path, "hello"); write_json(path, {"a": 1}, indent=2)
    with atomic_file(path, "wb") as f: fig.savefig(f, format="png")
    write_dir(model.save_pretrained, "runs/ckpt")          # save_fn(tmp_dir), then rename into place
"""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import uuid
from pathlib import Path
from typing import Any, Callable, Iterator


def _temporary(path: Path) -> Path:
    # Same directory (os.replace must not cross filesystems); unique per process and call.
    return path.with_name(f".{path.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}")


@contextlib.contextmanager
def atomic_file(path: str | os.PathLike, mode: str = "w", encoding: str | None = "utf-8") -> Iterator[Any]:
    """An open file whose content replaces `path` only when the block ends without an error.

    Usage: ``with atomic_file("out.bin", "wb") as f: f.write(data)``
    """
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_file writes a whole file: mode must be 'w' or 'wb', got {mode!r}")
    path = Path(path)
    tmp = _temporary(path)
    try:
        with open(tmp, mode, encoding=encoding if mode == "w" else None) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.remove(tmp)
        raise


def write_text(path: str | os.PathLike, text: str) -> Path:
    """Write `text` to `path` atomically; returns the path. Usage: ``write_text("report.md", md)``"""
    with atomic_file(path, "w") as f:
        f.write(text)
    return Path(path)


def write_json(path: str | os.PathLike, data: Any, **dumps_kwargs) -> Path:
    """`json.dump(data, **dumps_kwargs)` into `path` atomically; returns the path.

    Usage: ``write_json("results.json", results, indent=2, default=str)``
    """
    with atomic_file(path, "w") as f:
        json.dump(data, f, **dumps_kwargs)
    return Path(path)


def write_dir(save_fn: Callable[[str], Any], final: str | os.PathLike) -> Path:
    """Write a directory via `save_fn(tmp_dir)`, then rename it to `final` (replacing an old one), so a
    crash never leaves half a folder. Usage: ``write_dir(model.save_pretrained, "ckpt/task0")``"""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.parent / f".{final.name}.tmp-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    try:
        save_fn(str(tmp))
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    return final
