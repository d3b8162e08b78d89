from __future__ import annotations

import os
import stat
import time
from pathlib import Path

import pytest

from fondation_worker.workspace import (
    TRASH_PREFIX,
    create_workspace,
    directory_size,
    disk_status,
    job_workspace,
    sweep,
)


def test_workspace_is_removed_even_on_error(tmp_path: Path) -> None:
    jobs = tmp_path / "jobs"
    seen: list[Path] = []

    def use_and_fail() -> None:
        with job_workspace(jobs, "job/../1") as ws:
            seen.append(ws.root)
            assert ws.root.parent == jobs
            assert stat.S_IMODE(ws.root.stat().st_mode) == 0o700
            ro = ws.root / "repo" / ".git" / "objects" / "pack"
            ro.mkdir(parents=True)
            (ro / "x.pack").write_text("x")
            ro.chmod(0o500)  # git leaves read-only bits around
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        use_and_fail()
    assert seen
    assert list(jobs.iterdir()) == []


def test_sweep_removes_leftovers_but_not_live_workspaces(tmp_path: Path) -> None:
    jobs = tmp_path / "jobs"
    # A crashed predecessor: a lock file nobody holds.
    dead = jobs / "old-1234"
    (dead / "repo").mkdir(parents=True)
    (dead / ".lock").write_text("")
    # A half-created directory without a lock, old enough.
    half = jobs / "half-1"
    half.mkdir()
    old = time.time() - 3600
    os.utime(half, (old, old))
    # A young one without a lock is left alone.
    young = jobs / "young-1"
    young.mkdir()
    stray = jobs / "stray-file"
    stray.write_text("x")
    with job_workspace(jobs, "live") as live:
        removed = sweep(jobs)
        assert live.root.exists()
    assert sorted(p.name for p in removed) == ["half-1", "old-1234", "stray-file"]
    assert sorted(p.name for p in jobs.iterdir()) == ["young-1"]


def test_disk_status(tmp_path: Path) -> None:
    status = disk_status(tmp_path / "does" / "not" / "exist", 0)
    assert status.ok
    assert status.free_mb > 0
    assert not disk_status(tmp_path, 10**12).ok
    assert "minimum" in disk_status(tmp_path, 5).describe()


def test_directory_size_stops_early(tmp_path: Path) -> None:
    for i in range(10):
        (tmp_path / f"f{i}").write_bytes(os.urandom(10_000))
    assert directory_size(tmp_path) >= 100_000
    assert directory_size(tmp_path, limit=15_000) < 100_000


def test_discard_renames_at_once_and_removes_in_the_background(tmp_path: Path) -> None:
    jobs = tmp_path / "jobs"
    ws = create_workspace(jobs, "job-1")
    root = ws.root
    (ws.repo / "pkg").mkdir(parents=True)
    for i in range(200):
        (ws.repo / "pkg" / f"f{i}.py").write_text("x = 1\n")
    thread = ws.discard()
    assert not root.exists()  # renamed before returning
    assert thread is not None
    thread.join(10)
    assert list(jobs.iterdir()) == []


def test_sweep_finishes_an_interrupted_removal_but_not_one_in_progress(tmp_path: Path) -> None:
    jobs = tmp_path / "jobs"
    # A crash between the rename and the end of the removal: a fresh, unlocked trash dir
    # (its lock file already gone) is removed, young as it is.
    crashed = jobs / f"{TRASH_PREFIX}job-1-abcd"
    (crashed / "repo").mkdir(parents=True)
    # A removal still running in a live worker: its lock is held, it is left alone.
    live = create_workspace(jobs, "job-2")
    in_progress = live.root.with_name(TRASH_PREFIX + live.root.name)
    os.rename(live.root, in_progress)
    live.root = in_progress
    removed = sweep(jobs, now=time.time())
    assert removed == [crashed]
    assert in_progress.exists()
    live.close()
    assert not in_progress.exists()
