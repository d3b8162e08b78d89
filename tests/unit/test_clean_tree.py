"""scripts/clean-tree.sh, the check that `make test` leaves the working tree as it found it
(issue 26: `make deps` rewrote package-lock.json in a fresh clone): empty in a fresh clone,
unchanged in a checkout with edits of its own, and every path named when something wrote."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "clean-tree.sh"


def git(repo: Path, *args: str) -> None:
    subprocess.run(
        ["git", "-c", "user.name=Test", "-c", "user.email=test@example.invalid", *args],
        cwd=repo,
        check=True,
        capture_output=True,
        timeout=30,
    )


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """A clone-like checkout: the script in scripts/, build/ ignored, one commit."""
    root = tmp_path / "clone"
    (root / "scripts").mkdir(parents=True)
    shutil.copy(SCRIPT, root / "scripts" / "clean-tree.sh")
    (root / ".gitignore").write_text("build/\n")
    (root / "package-lock.json").write_text('{"packages": {}}\n')
    git(root, "init", "-q", "-b", "main")
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", "initial")
    return root


def tree(repo: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", str(repo / "scripts" / "clean-tree.sh"), *args],
        cwd=repo,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def test_a_fresh_clone_that_stays_clean_passes(repo: Path) -> None:
    assert tree(repo, "snapshot").stdout == ""
    (repo / "build" / "output").write_text("ignored\n")
    done = tree(repo, "check", "make deps")
    assert done.returncode == 0, done.stderr
    assert "as make test found it after make deps" in done.stdout


def test_a_rewritten_lock_and_a_new_file_are_named(repo: Path) -> None:
    tree(repo, "snapshot")
    (repo / "package-lock.json").write_text('{"packages": {"napi": {}}}\n')
    (repo / "stray.txt").write_text("written by a test\n")
    done = tree(repo, "check", "make deps")
    assert done.returncode == 1
    assert "make deps changed the working tree" in done.stderr
    assert "> ?? stray.txt" in done.stderr
    assert ">  M package-lock.json" in done.stderr


def test_edits_made_before_are_left_out_but_a_change_to_them_is_not(repo: Path) -> None:
    (repo / "package-lock.json").write_text("edited by hand\n")
    (repo / "notes.txt").write_text("mine\n")
    started = tree(repo, "snapshot")
    assert "notes.txt" in started.stdout
    assert tree(repo, "check", "make test").returncode == 0
    (repo / "notes.txt").write_text("mine, then rewritten by a test\n")
    done = tree(repo, "check", "make test")
    assert done.returncode == 1
    assert "notes.txt" in done.stderr


def test_a_deleted_tracked_file_is_named(repo: Path) -> None:
    tree(repo, "snapshot")
    (repo / "package-lock.json").unlink()
    done = tree(repo, "check", "make test")
    assert done.returncode == 1
    assert ">  D package-lock.json" in done.stderr


def test_check_without_a_snapshot_refuses(repo: Path) -> None:
    done = tree(repo, "check", "make test")
    assert done.returncode == 2
    assert "no snapshot" in done.stderr
