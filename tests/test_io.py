"""fastfreeze._io: a write either replaces the file whole or leaves the old one, and leaves no litter."""
from __future__ import annotations

import json
import os

import pytest

from fastfreeze import _io


def _litter(directory) -> list[str]:
    return [n for n in os.listdir(directory) if ".tmp" in n]


def test_text_json_and_bytes_round_trip(tmp_path):
    assert _io.write_text(tmp_path / "a.txt", "héllo\n").read_text(encoding="utf-8") == "héllo\n"
    _io.write_json(tmp_path / "b.json", {"x": [1, 2]}, indent=2)
    assert json.loads((tmp_path / "b.json").read_text()) == {"x": [1, 2]}
    with _io.atomic_file(tmp_path / "c.bin", "wb") as f:
        f.write(b"\x00\x01")
    assert (tmp_path / "c.bin").read_bytes() == b"\x00\x01"
    assert not _litter(tmp_path)


def test_failed_write_keeps_the_old_file_and_no_temporary(tmp_path):
    path = tmp_path / "state.json"
    _io.write_json(path, {"step": 1})
    with pytest.raises(TypeError):
        _io.write_json(path, {"step": object()})  # not JSON-serializable, fails half-way
    assert json.loads(path.read_text()) == {"step": 1}
    with pytest.raises(RuntimeError):
        with _io.atomic_file(path, "w") as f:
            f.write("partial")
            raise RuntimeError("crash while writing")
    assert json.loads(path.read_text()) == {"step": 1}
    assert not _litter(tmp_path)


def test_fsync_failure_is_reported_and_cleaned_up(tmp_path, monkeypatch):
    def full_disk(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", full_disk)
    with pytest.raises(OSError, match="No space"):
        _io.write_text(tmp_path / "x.txt", "data")
    assert not (tmp_path / "x.txt").exists() and not _litter(tmp_path)


def test_write_dir_replaces_whole_folder(tmp_path):
    final = tmp_path / "ckpt"

    def save(files):
        def fn(d):
            os.makedirs(d, exist_ok=True)
            for name in files:
                (tmp_path / d / name).write_text(name)
        return fn

    _io.write_dir(save(["a", "b"]), final)
    assert sorted(os.listdir(final)) == ["a", "b"]
    _io.write_dir(save(["c"]), final)
    assert sorted(os.listdir(final)) == ["c"]  # the old folder is gone, not merged

    def crash(d):
        save(["half"])(d)
        raise RuntimeError("crash while saving")

    with pytest.raises(RuntimeError):
        _io.write_dir(crash, final)
    assert sorted(os.listdir(final)) == ["c"] and not _litter(tmp_path)


def test_mode_must_write_a_whole_file(tmp_path):
    with pytest.raises(ValueError, match="mode"):
        with _io.atomic_file(tmp_path / "x", "a"):
            pass
