"""Atomic writes: all or nothing, and synced to disk before the rename."""

from __future__ import annotations

import json
import os

import pytest

from vaesae import atomic
from vaesae.atomic import atomic_path, write_json


def test_failed_write_leaves_the_old_version(tmp_path):
    path = write_json(tmp_path / "summary.json", {"status": "running"})
    with pytest.raises(RuntimeError), atomic_path(path) as tmp:
        tmp.write_text("{half")
        raise RuntimeError("killed mid-write")
    assert json.loads(path.read_text()) == {"status": "running"}
    assert [p.name for p in tmp_path.iterdir()] == ["summary.json"]


def test_data_is_fsynced_before_the_rename_and_the_directory_after(tmp_path, monkeypatch):
    events: list[str] = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd):
        events.append("fsync " + os.readlink(f"/proc/self/fd/{fd}"))
        real_fsync(fd)

    def replace(src, dst):
        events.append("replace")
        real_replace(src, dst)

    monkeypatch.setattr(atomic.os, "fsync", fsync)
    monkeypatch.setattr(atomic.os, "replace", replace)
    write_json(tmp_path / "a.json", {"x": float("nan")})
    assert len(events) == 3
    assert events[0].startswith("fsync ") and events[0].endswith(".json")
    assert ".a.tmp" in events[0]
    assert events[1] == "replace"
    assert events[2] == f"fsync {tmp_path}"
    assert json.loads((tmp_path / "a.json").read_text()) == {"x": None}
