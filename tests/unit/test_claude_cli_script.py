"""scripts/claude-cli.sh binary: extracts the pinned CLI once, atomically.

It used to extract again on every call (the binary's timestamp, from the package, is older
than the archive), rewriting the file in place: a CLI started at that moment failed with
"Text file busy". The script runs here in a copy of the repository layout with a small
archive of our own (no npm), whose ``package/claude`` is a shell script.
"""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import subprocess
import tarfile
import threading
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "claude-cli.sh"
VERSION = "9.9.9"
# A CLI that takes a moment to run, so it is running while the script is called again.
FAKE_CLI = b"#!/bin/sh\nsleep 0.2\necho fake-claude 9.9.9\n"


def make_root(tmp_path: Path, cli: bytes = FAKE_CLI) -> Path:
    """A repository copy: scripts/claude-cli.sh, worker/claude-cli.lock, the cached archive."""
    root = tmp_path / "repo"
    (root / "scripts").mkdir(parents=True)
    (root / "worker").mkdir()
    (root / "build" / "cache").mkdir(parents=True)
    shutil.copy2(SCRIPT, root / "scripts" / "claude-cli.sh")
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        info = tarfile.TarInfo("package/claude")
        info.size = len(cli)
        info.mode = 0o755
        info.mtime = 1_000_000  # the package's timestamp: far older than the archive file
        tar.addfile(info, io.BytesIO(cli))
    archive = buffer.getvalue()
    (root / "build" / "cache" / f"claude-cli-{VERSION}.tgz").write_bytes(archive)
    (root / "worker" / "claude-cli.lock").write_text(
        "CLAUDE_CLI_PACKAGE=@example/fake-cli\n"
        f"CLAUDE_CLI_VERSION={VERSION}\n"
        f"CLAUDE_CLI_SHA256={hashlib.sha256(archive).hexdigest()}\n"
    )
    return root


def binary(root: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", str(root / "scripts" / "claude-cli.sh"), "binary"],
        env={"PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_the_binary_is_extracted_once(tmp_path: Path) -> None:
    root = make_root(tmp_path)
    first = binary(root)
    assert first.returncode == 0, first.stderr
    path = Path(first.stdout.strip())
    assert path == root / "build" / "cache" / f"claude-cli-{VERSION}" / "claude"
    before = path.stat()
    second = binary(root)
    assert second.returncode == 0, second.stderr
    after = path.stat()
    # Same file, untouched (its ctime changes with any rewrite or new file): not extracted
    # again.
    assert (after.st_ino, after.st_ctime_ns) == (before.st_ino, before.st_ctime_ns)
    assert subprocess.run([path], capture_output=True, text=True, timeout=10).stdout.startswith(
        "fake-claude"
    )
    leftovers = [p.name for p in path.parent.iterdir() if p.name.startswith(".extract")]
    assert leftovers == []


def test_a_damaged_extraction_is_replaced_by_a_rename(tmp_path: Path) -> None:
    root = make_root(tmp_path)
    path = Path(binary(root).stdout.strip())
    (path.parent / "claude.sha256").write_text("not the archive's checksum\n")
    old_inode = path.stat().st_ino
    again = binary(root)
    assert again.returncode == 0, again.stderr
    # A new file renamed over the old name; the old inode was never rewritten.
    assert path.stat().st_ino != old_inode
    assert path.read_bytes() == FAKE_CLI


def test_calls_while_the_cli_runs_never_make_it_busy(tmp_path: Path) -> None:
    """Start the CLI over and over while other calls of the script run: no start fails."""
    root = make_root(tmp_path)
    path = Path(binary(root).stdout.strip())
    failures: list[str] = []
    stop = threading.Event()

    def start_cli() -> None:
        while not stop.is_set():
            try:
                run = subprocess.run([path], capture_output=True, text=True, timeout=10)
            except OSError as exc:  # ETXTBSY surfaces here
                failures.append(f"start: {exc}")
                continue
            if run.returncode != 0:
                failures.append(f"exit {run.returncode}: {run.stderr}")

    starters = [threading.Thread(target=start_cli) for _ in range(3)]
    for thread in starters:
        thread.start()
    try:
        calls = [binary(root) for _ in range(8)]
        # Also several at once, as parallel test sessions do.
        parallel: list[subprocess.CompletedProcess[str]] = []
        callers = [threading.Thread(target=lambda: parallel.append(binary(root))) for _ in range(4)]
        for thread in callers:
            thread.start()
        for thread in callers:
            thread.join(timeout=60)
    finally:
        stop.set()
        for thread in starters:
            thread.join(timeout=30)
    assert [c.returncode for c in calls + parallel] == [0] * 12, [c.stderr for c in calls]
    assert failures == []
    assert os.access(path, os.X_OK)
