"""Per-job workspaces under ``TEMP_DIR/jobs``, always removed; the start sweep; disk
preflight.

Each workspace holds an ``flock`` on its ``.lock`` file for as long as its job runs. The
startup sweep removes every workspace whose lock nobody holds: leftovers of a crashed
predecessor, never the directory of another live worker sharing the same TEMP_DIR.

A finished job's workspace is first renamed to ``.trash-<name>`` (one syscall, so the job's
last call is not kept waiting), then removed by a background thread that holds the lock
until it is done. A crash in between leaves a ``.trash-`` directory, which the sweep removes
whatever its age once nobody holds its lock.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import secrets
import shutil
import stat
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from . import watchdog
from .logging_setup import get_logger

log = get_logger(__name__)

LOCK_NAME = ".lock"
TRASH_PREFIX = ".trash-"
# A directory without a lock file is being created right now, or is a crash leftover from
# between mkdir and lock; leave young ones alone.
UNLOCKED_GRACE_S = 300.0
# Scratch directories of Claude auth probes, directly under TEMP_DIR (claude_runner.py).
PROBE_DIR_PREFIX = "probe-"
_SAFE = re.compile(r"[^A-Za-z0-9_\-]")


@dataclass(frozen=True)
class DiskStatus:
    free_mb: int
    min_free_mb: int

    @property
    def ok(self) -> bool:
        return self.free_mb >= self.min_free_mb

    def describe(self) -> str:
        return f"{self.free_mb} MiB free, minimum {self.min_free_mb} MiB"


def disk_status(path: Path, min_free_mb: int) -> DiskStatus:
    """Free space on the filesystem holding ``path`` (its nearest existing parent)."""
    probe = path
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    usage = shutil.disk_usage(probe)
    return DiskStatus(free_mb=usage.free // (1024 * 1024), min_free_mb=min_free_mb)


def disk_bytes(path: Path, min_free_mb: int) -> tuple[int, int]:
    """(free bytes, minimum free bytes) on the filesystem holding ``path`` (for /metrics)."""
    probe = path
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    return shutil.disk_usage(probe).free, min_free_mb * 1024 * 1024


def _chmod_and_retry(func: object, path: str, _exc: object) -> None:
    # rmtree cannot delete entries of read-only directories (git marks some objects so).
    with contextlib.suppress(OSError):
        parent = os.path.dirname(path)
        os.chmod(parent, stat.S_IRWXU)
        os.chmod(path, stat.S_IRWXU)
    if callable(func):
        with contextlib.suppress(OSError):
            func(path)


def remove_tree(path: Path) -> None:
    if path.is_symlink() or path.is_file():
        path.unlink(missing_ok=True)
        return
    if path.exists():
        shutil.rmtree(path, onerror=_chmod_and_retry)


class Workspace:
    """``root/`` with ``repo/`` (the clone), ``home/`` (HOME for git) and ``tmp/``."""

    def __init__(self, root: Path, lock_fd: int) -> None:
        self.root = root
        self._lock_fd = lock_fd

    @property
    def repo(self) -> Path:
        return self.root / "repo"

    @property
    def home(self) -> Path:
        return self.root / "home"

    @property
    def tmp(self) -> Path:
        return self.root / "tmp"

    def close(self) -> None:
        try:
            remove_tree(self.root)
        finally:
            with contextlib.suppress(OSError):
                os.close(self._lock_fd)

    def discard(self) -> threading.Thread | None:
        """Rename out of the way now, remove in the background (still locked); returns the
        removing thread, or None when the rename failed and the tree was removed here."""
        trash = self.root.with_name(TRASH_PREFIX + self.root.name)
        try:
            os.rename(self.root, trash)
        except OSError:
            self.close()
            return None
        self.root = trash
        thread = threading.Thread(target=self.close, name=f"rm-{trash.name}", daemon=True)
        thread.start()
        return thread


def create_workspace(jobs_dir: Path, job_id: str) -> Workspace:
    """A new locked workspace for ``job_id``; the caller must ``close`` or ``discard`` it."""
    jobs_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    name = f"{_SAFE.sub('_', job_id)[:64]}-{secrets.token_hex(4)}"
    root = jobs_dir / name
    root.mkdir(mode=0o700)
    lock_fd = -1
    try:
        lock_fd = os.open(root / LOCK_NAME, os.O_CREAT | os.O_RDWR | os.O_NOFOLLOW, 0o600)
        fcntl.flock(lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        for sub in ("home", "tmp"):
            (root / sub).mkdir(mode=0o700)
    except BaseException:
        if lock_fd >= 0:
            os.close(lock_fd)
        remove_tree(root)
        raise
    return Workspace(root, lock_fd)


@contextlib.contextmanager
def job_workspace(jobs_dir: Path, job_id: str) -> Iterator[Workspace]:
    """Create a locked workspace for ``job_id``; it is removed whatever happens."""
    workspace = create_workspace(jobs_dir, job_id)
    try:
        yield workspace
    finally:
        workspace.close()


def sweep(
    jobs_dir: Path,
    now: float | None = None,
    before_remove: Callable[[Path], object] | None = None,
) -> list[Path]:
    """Remove workspaces nobody holds; returns what was removed. ``before_remove`` is
    called with each one first (the worker stops processes left working in it)."""
    removed: list[Path] = []
    if not jobs_dir.is_dir():
        return removed
    now = time.time() if now is None else now
    for entry in sorted(jobs_dir.iterdir()):
        if entry.is_symlink() or not entry.is_dir():
            remove_tree(entry)
            removed.append(entry)
            continue
        lock_path = entry / LOCK_NAME
        if not lock_path.exists():
            try:
                age = now - entry.stat().st_mtime
            except OSError:
                continue
            # Trash is never a workspace being created: its removal was cut short.
            if age > UNLOCKED_GRACE_S or entry.name.startswith(TRASH_PREFIX):
                if before_remove is not None:
                    before_remove(entry)
                remove_tree(entry)
                removed.append(entry)
            continue
        try:
            fd = os.open(lock_path, os.O_RDWR | os.O_NOFOLLOW)
        except OSError:
            continue
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                continue  # a live worker owns it
            if before_remove is not None:
                before_remove(entry)
            remove_tree(entry)
            removed.append(entry)
        finally:
            os.close(fd)
    return removed


def stop_leftover_processes(workspace: Path) -> None:
    """Kill a predecessor's Claude runs still working in ``workspace`` (its jobs are given
    back by the recovery that follows the sweep)."""
    killed = watchdog.kill_under(watchdog.roots_of(str(workspace)), {os.getpid()})
    if killed:
        log.warning("workspace.leftover_processes_killed", workspace=workspace.name, pids=killed)


def sweep_worker_dirs(jobs_dir: Path, temp_dir: Path) -> list[Path]:
    """The start sweep: workspaces nobody holds (their leftover processes stopped first),
    and auth-probe scratch dirs a crash left (no lock: only this worker uses them)."""
    removed = sweep(jobs_dir, before_remove=stop_leftover_processes)
    for leftover in temp_dir.glob(f"{PROBE_DIR_PREFIX}*"):
        remove_tree(leftover)
        removed.append(leftover)
    if removed:
        log.info("workspace.swept", removed=[p.name for p in removed])
    return removed


def directory_size(path: Path, limit: int | None = None) -> int:
    """Bytes used under ``path`` (no symlink following); stops early past ``limit``."""
    total = 0
    stack = [path]
    while stack:
        current = stack.pop()
        try:
            with os.scandir(current) as entries:
                for entry in entries:
                    try:
                        st = entry.stat(follow_symlinks=False)
                    except OSError:
                        continue
                    total += st.st_blocks * 512 if st.st_blocks else st.st_size
                    if entry.is_dir(follow_symlinks=False):
                        stack.append(Path(entry.path))
                    if limit is not None and total > limit:
                        return total
        except OSError:
            continue
    return total
