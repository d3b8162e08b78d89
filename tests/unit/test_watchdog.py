"""The lease watchdog (watchdog.py) on its own, with a stand-in worker process: a job's
processes die when its lease deadline passes or when the worker is gone, not before."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from fondation_worker import watchdog
from fondation_worker.watchdog import POLL_S, kill_under, write_deadline
from tests.support import wait_until

SLEEPER = [sys.executable, "-c", "import time; time.sleep(60)"]


def alive(proc: subprocess.Popen[bytes]) -> bool:
    return proc.poll() is None


def job_process(cwd: Path) -> subprocess.Popen[bytes]:
    """A stand-in for Claude: its own session, working in the job's workspace."""
    return subprocess.Popen(SLEEPER, cwd=cwd, start_new_session=True)


def stand_in_worker(jobs: Path) -> subprocess.Popen[bytes]:
    """A process that starts the watchdog as the worker does, then just waits."""
    code = (
        "import os, subprocess, sys, time\n"
        f"subprocess.Popen([sys.executable, '-I', '-S', {watchdog.__file__!r}, {str(jobs)!r},"
        " str(os.getpid())], start_new_session=True)\n"
        "time.sleep(120)\n"
    )
    return subprocess.Popen([sys.executable, "-c", code])


def test_kill_under_takes_the_workspace_processes_and_nothing_else(tmp_path: Path) -> None:
    inside = tmp_path / "jobs" / "job-1-abcd" / "repo"
    inside.mkdir(parents=True)
    elsewhere = tmp_path / "other"
    elsewhere.mkdir()
    victim, bystander = job_process(inside), job_process(elsewhere)
    try:
        found = kill_under(watchdog.roots_of(str(tmp_path / "jobs" / "job-1-abcd")))
        assert found == [victim.pid]
        assert victim.wait(5) == -signal.SIGKILL
        assert alive(bystander)
    finally:
        bystander.kill()
        bystander.wait(5)


def test_a_lease_that_is_no_longer_renewed_stops_the_jobs_processes(tmp_path: Path) -> None:
    jobs = tmp_path / "jobs"
    renewed, abandoned = jobs / "job-r-0001", jobs / "job-a-0002"
    for ws in (renewed, abandoned):
        (ws / "repo").mkdir(parents=True)
    write_deadline(str(renewed / "lease-deadline"), time.monotonic() + 600)
    deadline = time.monotonic() + 3
    write_deadline(str(abandoned / "lease-deadline"), deadline)
    keep, stop = job_process(renewed / "repo"), job_process(abandoned / "repo")
    worker = stand_in_worker(jobs)
    try:
        assert stop.wait(15) == -signal.SIGKILL
        killed_at = time.monotonic()
        # One poll before the deadline at the earliest, and well within 5 s of it.
        assert deadline - 2 * POLL_S - 0.2 <= killed_at <= deadline + 1.0
        assert alive(keep)
        # The worker dies (kill -9): what still works in its workspaces is stopped too.
        worker.kill()
        worker.wait(5)
        assert keep.wait(10) == -signal.SIGKILL
    finally:
        for proc in (keep, stop, worker):
            if alive(proc):
                proc.kill()
                proc.wait(5)


def test_the_watchdog_ends_with_its_worker(tmp_path: Path) -> None:
    jobs = tmp_path / "jobs"
    jobs.mkdir()
    worker = stand_in_worker(jobs)
    time.sleep(1)
    watchdogs = [
        pid
        for pid in (int(p) for p in os.listdir("/proc") if p.isdigit())
        if _ppid(pid) == worker.pid
    ]
    assert len(watchdogs) == 1
    worker.terminate()
    worker.wait(5)
    wait_until(lambda: not Path(f"/proc/{watchdogs[0]}").exists() or _zombie(watchdogs[0]), 5)


def _ppid(pid: int) -> int:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, ValueError, IndexError):
        return -1


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True
