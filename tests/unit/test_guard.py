"""The lease guard (guard.py) on its own: a command runs while the deadline in its file is
renewed, and dies with its whole process group once the deadline passes or the file goes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from conftest import wait_until
from fondation_worker.claude_runner import guard_argv
from fondation_worker.guard import POLL_S, write_deadline

# A command that starts a grandchild in the same group and reports both pids.
TREE = (
    "import os, subprocess, sys, time\n"
    "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])\n"
    "open(sys.argv[1], 'w').write(f'{os.getpid()} {child.pid}')\n"
    "time.sleep(60)\n"
)


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state not in ("Z", "X")


def start(tmp_path: Path, deadline: float | None, code: str, *args: str) -> subprocess.Popen[bytes]:
    lease = tmp_path / "lease-deadline"
    if deadline is not None:
        write_deadline(str(lease), deadline)
    return subprocess.Popen(
        [*guard_argv(lease), sys.executable, "-c", code, *args],
        start_new_session=True,  # as SubprocessRunner starts it
    )


def test_the_command_runs_and_its_exit_status_is_passed_on(tmp_path: Path) -> None:
    guard = start(tmp_path, time.monotonic() + 60, "import sys; sys.exit(3)")
    assert guard.wait(20) == 3


def test_a_deadline_that_passes_kills_the_command_and_its_children(tmp_path: Path) -> None:
    pids = tmp_path / "pids"
    lease = tmp_path / "lease-deadline"
    deadline = time.monotonic() + 3
    guard = start(tmp_path, deadline, TREE, str(pids))
    wait_until(lambda: pids.exists() and pids.read_text(), 10)
    command, grandchild = (int(p) for p in pids.read_text().split())
    # Renewed once: the first deadline must not count any more.
    time.sleep(1)
    deadline = time.monotonic() + 3
    write_deadline(str(lease), deadline)
    assert guard.wait(15) == -signal.SIGKILL
    killed_at = time.monotonic()
    # Killed one poll before the deadline at the earliest, and not long after it.
    assert deadline - POLL_S - 0.1 <= killed_at <= deadline + 1.0
    wait_until(lambda: not alive(command) and not alive(grandchild), 5)


def test_a_removed_deadline_file_stops_the_command_at_once(tmp_path: Path) -> None:
    pids = tmp_path / "pids"
    guard = start(tmp_path, time.monotonic() + 600, TREE, str(pids))
    wait_until(lambda: pids.exists() and pids.read_text(), 10)
    os.unlink(tmp_path / "lease-deadline")  # what the sweep of a restarted worker does
    t0 = time.monotonic()
    assert guard.wait(10) == -signal.SIGKILL
    assert time.monotonic() - t0 <= POLL_S + 1.0


def test_a_group_signal_reaches_the_command_which_decides(tmp_path: Path) -> None:
    code = (
        "import signal, sys, time\n"
        "signal.signal(signal.SIGTERM, lambda *a: sys.exit(7))\n"
        "open(sys.argv[1], 'w').write('up')\n"
        "time.sleep(60)\n"
    )
    ready = tmp_path / "ready"
    guard = start(tmp_path, time.monotonic() + 600, code, str(ready))
    wait_until(ready.exists, 10)
    os.killpg(guard.pid, signal.SIGTERM)  # SubprocessRunner's graceful stop
    assert guard.wait(10) == 7  # the guard survived the signal and passed on the exit code


def test_an_expired_deadline_does_not_start_the_command(tmp_path: Path) -> None:
    ran = tmp_path / "ran"
    guard = start(tmp_path, None, f"open({str(ran)!r}, 'w')")
    assert guard.wait(10) == 125
    assert not ran.exists()
