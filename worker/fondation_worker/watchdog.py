"""Lease watchdog: a small process beside the worker that stops a job's processes once the
worker stops renewing that job's lease, whatever state the worker is in.

The worker starts it once (``python -I -S watchdog.py JOBS_DIR WORKER_PID``); its heartbeat
threads keep each job's ``lease-deadline`` file (in the job's workspace, a
``time.monotonic()`` value: the system-wide clock this process reads too) at the worker's
own conservative end of the lease. Every 0.5 s the watchdog reads those files; one poll
before a deadline passes, it kills every process working in that workspace (by its current
directory: the clone, Claude and anything Claude started), with their process groups. If
the worker dies, it kills what remains in every workspace and exits. Being outside the
worker's loop, it acts when the worker is frozen (stopped, stuck, starved) or gone.

Only modules loaded at interpreter start (os, signal, sys, time), so it starts fast and
stays small; it costs nothing per job or per step.
"""

from __future__ import annotations

import os
import signal
import sys
import time

POLL_S = 0.5
LEASE_FILE_NAME = "lease-deadline"
TRASH_PREFIX = ".trash-"  # workspace.py: a finished workspace, renamed before removal


def read_deadline(path: str) -> float | None:
    try:
        with open(path, encoding="ascii") as handle:
            return float(handle.read().strip())
    except (OSError, ValueError):
        return None


def write_deadline(path: str, deadline: float) -> None:
    """Atomically (rename), so the watchdog never reads half a number."""
    tmp = f"{path}.tmp"
    with open(tmp, "w", encoding="ascii") as handle:
        handle.write(f"{deadline:.3f}\n")
    os.replace(tmp, path)


def expired(deadline: float | None, now: float) -> bool:
    return deadline is not None and now + POLL_S >= deadline


def _inside(cwd: str, roots: list[str]) -> bool:
    cwd = cwd.removesuffix(" (deleted)")
    return any(cwd == root or cwd.startswith(root + "/") for root in roots)


def kill_under(roots: list[str], spare: frozenset[int] | set[int] = frozenset()) -> list[int]:
    """SIGKILL every process whose current directory is under one of ``roots``, with its
    process group; never a pid or group in ``spare``. Returns the pids found."""
    found: list[int] = []
    try:
        pids = [int(name) for name in os.listdir("/proc") if name.isdigit()]
    except OSError:
        return found
    me = os.getpid()
    for pid in pids:
        if pid == me or pid in spare:
            continue
        try:
            cwd = os.readlink(f"/proc/{pid}/cwd")
        except OSError:
            continue  # gone, or not ours to inspect
        if not _inside(cwd, roots):
            continue
        found.append(pid)
        try:
            group = os.getpgid(pid)
            if group in spare or group == os.getpgrp():
                os.kill(pid, signal.SIGKILL)
            else:
                os.killpg(group, signal.SIGKILL)
        except OSError:
            continue
    return found


def workspaces(jobs_dir: str) -> list[str]:
    try:
        names = os.listdir(jobs_dir)
    except OSError:
        return []
    return [os.path.join(jobs_dir, n) for n in names if not n.startswith(TRASH_PREFIX)]


def roots_of(path: str) -> list[str]:
    head, name = os.path.split(path)
    return [path, os.path.join(head, TRASH_PREFIX + name)]


def main(argv: list[str]) -> int:
    if len(argv) != 3:
        print("usage: watchdog.py JOBS_DIR WORKER_PID", file=sys.stderr)
        return 2
    jobs_dir, worker = argv[1], int(argv[2])
    spare = {worker}
    try:
        spare.add(os.getpgid(worker))
    except OSError:
        return 0  # the worker is already gone
    # The worker's signals (SIGINT from a terminal) are not ours: we stop when it is gone.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    handled: dict[str, float] = {}  # workspace -> the deadline already acted on
    while True:
        worker_gone = os.getppid() != worker
        now = time.monotonic()
        current = workspaces(jobs_dir)
        for path in current:
            deadline = read_deadline(os.path.join(path, LEASE_FILE_NAME))
            due = expired(deadline, now) and handled.get(path) != deadline
            if (worker_gone or due) and kill_under(roots_of(path), spare):
                why = "worker gone" if worker_gone else "lease ended"
                print(f"watchdog: {why}, processes in {path} killed", file=sys.stderr, flush=True)
            if due and deadline is not None:
                handled[path] = deadline
        handled = {p: d for p, d in handled.items() if p in current}
        if worker_gone:
            return 0
        time.sleep(POLL_S)


if __name__ == "__main__":
    raise SystemExit(main(sys.argv))
