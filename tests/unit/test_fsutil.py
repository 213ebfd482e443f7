"""Atomic writes and the sweep of temp files left by killed writers."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from kansrijk.fsutil import atomic_path, atomic_write_bytes, sweep_stale_temp_files, temp_name


def test_atomic_write_replaces_whole_file_and_leaves_no_temp(tmp_path):
    target = tmp_path / "a" / "out.json"
    atomic_write_bytes(target, b"one")
    atomic_write_bytes(target, b"two")
    assert target.read_bytes() == b"two"
    assert [p.name for p in target.parent.iterdir()] == ["out.json"]


def test_failed_atomic_write_keeps_old_file_and_removes_temp(tmp_path):
    target = tmp_path / "out.json"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_bytes(b"half")
        raise RuntimeError("writer failed")
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.json"]


def test_sweep_removes_temp_files_of_dead_writers_only(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_pid = int(dead.stdout)
    (tmp_path / "sub").mkdir()
    stale = tmp_path / "sub" / f".2023.parquet.pid{dead_pid}.tmp"
    stale_random = tmp_path / f".x.json.pid{dead_pid}.ab12cd34.tmp"
    live = temp_name(tmp_path / "2024.parquet")  # this process: alive
    unrelated = tmp_path / ".notes.tmp"
    for p in (stale, stale_random, live, unrelated):
        p.write_bytes(b"x")
    removed = sweep_stale_temp_files(tmp_path)
    assert sorted(removed) == sorted([stale, stale_random])
    assert live.exists() and unrelated.exists() and os.getpid() > 0
