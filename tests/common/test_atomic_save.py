"""common.handlers.atomic_save: the file on disk is always a whole one, the old or the new."""

from __future__ import annotations

import os

import pytest
import torch

from common.handlers.atomic_save import partial_path, save_atomically


def test_writes_a_file_weights_only_load_reads(tmp_path):
    path = save_atomically({"w": torch.arange(3.0), "n": 2}, tmp_path / "sub" / "ckpt.pt")
    assert path == tmp_path / "sub" / "ckpt.pt"
    loaded = torch.load(path, map_location="cpu", weights_only=True)
    assert torch.equal(loaded["w"], torch.arange(3.0)) and loaded["n"] == 2
    assert sorted(p.name for p in path.parent.iterdir()) == ["ckpt.pt"]
    assert partial_path(path) == tmp_path / "sub" / ".ckpt.pt.partial"


def test_file_and_folder_are_synced_before_and_after_the_rename(tmp_path, monkeypatch):
    events = []
    real_fsync, real_replace = os.fsync, os.replace
    monkeypatch.setattr(os, "fsync", lambda fd: events.append("fsync") or real_fsync(fd))
    monkeypatch.setattr(os, "replace", lambda a, b: events.append("replace") or real_replace(a, b))
    save_atomically({"a": 1}, tmp_path / "ckpt.pt")
    expected = ["fsync", "replace", "fsync"] if os.name == "posix" else ["fsync", "replace"]
    assert events == expected


def test_a_failed_write_keeps_the_previous_file(tmp_path, monkeypatch):
    path = save_atomically({"version": 1}, tmp_path / "ckpt.pt")
    real_save = torch.save

    def half_then_fail(obj, f, *args, **kwargs):
        real_save(obj, f, *args, **kwargs)
        f.truncate(10)  # a torn write
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", half_then_fail)
    with pytest.raises(OSError, match="disk full"):
        save_atomically({"version": 2}, path)
    assert torch.load(path, map_location="cpu", weights_only=True) == {"version": 1}
    assert not partial_path(path).exists()


def test_a_killed_write_leaves_the_previous_file_and_a_partial_one(tmp_path):
    """What a kill between the write and the rename leaves: the old file whole, the partial one beside it."""
    path = save_atomically({"version": 1}, tmp_path / "ckpt.pt")
    partial_path(path).write_bytes(b"torn")  # as a killed save leaves it
    assert torch.load(path, map_location="cpu", weights_only=True) == {"version": 1}
    save_atomically({"version": 2}, path)  # the next save overwrites it
    assert torch.load(path, map_location="cpu", weights_only=True) == {"version": 2}
    assert not partial_path(path).exists()
