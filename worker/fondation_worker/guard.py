"""Lease guard: runs one command and kills it when the job's lease deadline passes.

The worker runs each Claude step as ``python -I -S guard.py DEADLINE_FILE -- claude ...``.
The worker's heartbeat thread rewrites DEADLINE_FILE (a ``time.monotonic()`` value: the
worker's own conservative end of the lease) on every renewal. This process is outside the
worker's loop: if the worker freezes, or dies without taking its children along, the
deadline stops moving and the guard kills the command's whole process group (itself
included) one poll before the deadline. A missing or unreadable file counts as expired: the
start-up sweep of a restarted worker removes a dead predecessor's files, which stops its
leftover runs at once.

Only modules loaded at interpreter start (os, signal, sys, time): with ``-I -S`` it starts
in about the time of ``python -c pass`` (``subprocess`` alone would double that, per step).
The command shares the guard's process group, so the worker's own kill of the group
(cancel, fence, timeout, shutdown) reaches both; the command's exit status is passed on
(a death by signal as the same signal).
"""

from __future__ import annotations

import os
import signal
import sys
import time

POLL_S = 0.5
EXIT_USAGE = 125


def read_deadline(path: str) -> float | None:
    try:
        with open(path, encoding="ascii") as handle:
            return float(handle.read().strip())
    except (OSError, ValueError):
        return None


def expired(path: str, now: float) -> bool:
    deadline = read_deadline(path)
    return deadline is None or now + POLL_S >= deadline


def write_deadline(path: str, deadline: float) -> None:
    """Atomically (rename), so the guard never reads half a number."""
    tmp = f"{path}.tmp"
    with open(tmp, "w", encoding="ascii") as handle:
        handle.write(f"{deadline:.3f}\n")
    os.replace(tmp, path)


def _ignore(signum: int, frame: object) -> None:
    del signum, frame  # the command got the same signal from the group kill; wait for it


def main(argv: list[str]) -> int:
    if len(argv) < 4 or argv[2] != "--":
        print("usage: guard.py DEADLINE_FILE -- COMMAND...", file=sys.stderr)
        return EXIT_USAGE
    path, command = argv[1], argv[3:]
    if expired(path, time.monotonic()):
        print(f"guard: lease deadline in {path} passed or missing; not starting", file=sys.stderr)
        return EXIT_USAGE
    # A Python-level handler is reset to the default by exec, so the command keeps its own.
    signal.signal(signal.SIGTERM, _ignore)
    signal.signal(signal.SIGINT, _ignore)
    # SIGCHLD stays pending while blocked, so sigtimedwait wakes the guard the moment the
    # command ends (no polling); the command gets an unblocked mask back before exec.
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGCHLD})
    try:
        pid = os.fork()
    except OSError as exc:
        print(f"guard: cannot start {command[0]}: {exc}", file=sys.stderr)
        return 127
    if pid == 0:
        try:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGCHLD})
            os.execvp(command[0], command)  # noqa: S606 - the worker's argument list
        except BaseException as exc:  # the forked child must never return to Python
            print(f"guard: cannot start {command[0]}: {exc}", file=sys.stderr, flush=True)
        finally:
            os._exit(127)
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        if expired(path, time.monotonic()):
            print("guard: lease deadline passed, killing the step", file=sys.stderr, flush=True)
            os.killpg(os.getpgrp(), signal.SIGKILL)  # the command, its children and us
        signal.sigtimedwait({signal.SIGCHLD}, POLL_S)
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        signal.signal(sig, signal.SIG_DFL)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {sig})
        os.kill(os.getpid(), sig)
        return 128 + sig  # only if that signal did not end the guard
    return os.waitstatus_to_exitcode(status)


if __name__ == "__main__":
    raise SystemExit(main(sys.argv))
