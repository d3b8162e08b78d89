"""Running child processes: argument lists, a timeout, a process group, an abort signal.

Every child starts in its own session (``start_new_session=True``) so that the worker can
kill the whole group - the CLI and anything it spawned - on cancel, fence, timeout or
shutdown. Output goes to files with a size cap, never into unbounded memory.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from .errors import AbortReason

POLL_S = 0.5  # how often the output size is checked; exits and aborts wake at once
TERM_GRACE_S = 3.0

_PRIORITY: dict[AbortReason, int] = {"shutdown": 1, "timeout": 2, "cancel": 3, "fence": 4}


class AbortSignal:
    """Why a job must stop, set from other threads; the strongest reason wins.

    ``fence`` (we lost the lease) beats ``cancel`` beats ``timeout`` beats ``shutdown``.
    """

    def __init__(self) -> None:
        self._event = threading.Event()
        self._lock = threading.Lock()
        self._reason: AbortReason | None = None
        self._listeners: list[Callable[[], None]] = []

    def abort(self, reason: AbortReason) -> bool:
        """Request a stop; returns True if this changed the reason."""
        with self._lock:
            if self._reason is not None and _PRIORITY[self._reason] >= _PRIORITY[reason]:
                return False
            self._reason = reason
            self._event.set()
            listeners = list(self._listeners)
        for listener in listeners:
            listener()
        return True

    def subscribe(self, listener: Callable[[], None]) -> Callable[[], None]:
        """Call ``listener`` on every abort (it must not block); returns the unsubscribe."""
        with self._lock:
            self._listeners.append(listener)

        def unsubscribe() -> None:
            with self._lock, contextlib.suppress(ValueError):
                self._listeners.remove(listener)

        return unsubscribe

    @property
    def reason(self) -> AbortReason | None:
        return self._reason

    def is_set(self) -> bool:
        return self._event.is_set()

    def wait(self, timeout: float) -> bool:
        return self._event.wait(timeout)


@dataclass(frozen=True)
class ProcessSpec:
    argv: Sequence[str]
    cwd: Path
    env: Mapping[str, str]
    timeout_s: float
    stdout_path: Path | None = None
    stderr_path: Path | None = None
    max_output_bytes: int | None = None


@dataclass(frozen=True)
class ProcessResult:
    returncode: int | None
    duration_s: float
    timed_out: bool = False
    aborted: AbortReason | None = None
    output_exceeded: bool = False
    watch_reason: str | None = None
    start_error: str | None = None

    @property
    def killed_by_us(self) -> bool:
        return bool(self.timed_out or self.aborted or self.output_exceeded or self.watch_reason)


Watch = Callable[[], str | None]
"""Called while the process runs; a non-None return kills it with that reason."""


class ProcessRunner(Protocol):
    def run(
        self, spec: ProcessSpec, abort: AbortSignal | None = None, watch: Watch | None = None
    ) -> ProcessResult: ...


def kill_group(pgid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def _file_size(path: Path | None) -> int:
    if path is None:
        return 0
    try:
        return path.stat().st_size
    except OSError:
        return 0


class SubprocessRunner:
    """The real ``ProcessRunner``."""

    def __init__(
        self, poll_s: float = POLL_S, term_grace_s: float = TERM_GRACE_S, watch_every_s: float = 0.5
    ) -> None:
        self.poll_s = poll_s
        self.term_grace_s = term_grace_s
        self.watch_every_s = watch_every_s

    def run(
        self, spec: ProcessSpec, abort: AbortSignal | None = None, watch: Watch | None = None
    ) -> ProcessResult:
        started = time.monotonic()
        if abort is not None and abort.is_set():
            return ProcessResult(None, 0.0, aborted=abort.reason)
        with contextlib.ExitStack() as stack:
            stdout = (
                stack.enter_context(open(spec.stdout_path, "wb"))
                if spec.stdout_path
                else subprocess.DEVNULL
            )
            stderr = (
                stack.enter_context(open(spec.stderr_path, "wb"))
                if spec.stderr_path
                else subprocess.DEVNULL
            )
            try:
                proc = subprocess.Popen(  # noqa: S603 - argument list, no shell
                    list(spec.argv),
                    cwd=spec.cwd,
                    env=dict(spec.env),
                    stdin=subprocess.DEVNULL,
                    stdout=stdout,
                    stderr=stderr,
                    start_new_session=True,
                    close_fds=True,
                )
            except OSError as exc:
                return ProcessResult(
                    None, time.monotonic() - started, start_error=f"{spec.argv[0]}: {exc}"
                )
            return self._supervise(proc, spec, abort, watch, started)

    def _supervise(
        self,
        proc: subprocess.Popen[bytes],
        spec: ProcessSpec,
        abort: AbortSignal | None,
        watch: Watch | None,
        started: float,
    ) -> ProcessResult:
        pgid = proc.pid  # leader of its own session and group
        deadline = started + spec.timeout_s
        next_watch = started + self.watch_every_s
        next_size = started + self.poll_s
        timed_out = output_exceeded = False
        aborted: AbortReason | None = None
        watch_reason: str | None = None
        # No polling while the child runs (Popen.wait(timeout) sleeps in 1-50 ms steps, a
        # measurable share of a core over a long Claude step): a thread blocks in waitpid
        # and wakes us when it returns, an abort wakes us through its listener, and
        # otherwise we sleep until the next deadline, watch or output-size check.
        wake = threading.Event()
        exited = threading.Event()

        def reap() -> None:
            with contextlib.suppress(Exception):
                proc.wait()
            exited.set()
            wake.set()

        reaper = threading.Thread(target=reap, name=f"wait-{proc.pid}", daemon=True)
        reaper.start()
        unsubscribe = abort.subscribe(wake.set) if abort is not None else None
        try:
            while True:
                wake.clear()
                if exited.is_set():
                    break
                now = time.monotonic()
                if abort is not None and abort.is_set():
                    aborted = abort.reason
                elif now >= deadline:
                    timed_out = True
                elif spec.max_output_bytes is not None and now >= next_size:
                    next_size = now + self.poll_s
                    output_exceeded = (
                        _file_size(spec.stdout_path) + _file_size(spec.stderr_path)
                        > spec.max_output_bytes
                    )
                elif watch is not None and now >= next_watch:
                    next_watch = now + self.watch_every_s
                    watch_reason = watch()
                if aborted or timed_out or output_exceeded or watch_reason:
                    self._stop(proc, pgid, hard=aborted == "fence")
                    break
                until = [deadline]
                if spec.max_output_bytes is not None:
                    until.append(next_size)
                if watch is not None:
                    until.append(next_watch)
                wake.wait(max(0.0, min(until) - time.monotonic()))
        finally:
            if unsubscribe is not None:
                unsubscribe()
            if not exited.is_set() and proc.returncode is None:
                self._stop(proc, pgid, hard=True)
            # Whatever the leader did, nothing it spawned may outlive it.
            kill_group(pgid, signal.SIGKILL)
            reaper.join(timeout=10)
        if spec.max_output_bytes is not None and (
            _file_size(spec.stdout_path) + _file_size(spec.stderr_path) > spec.max_output_bytes
        ):
            output_exceeded = True  # it finished between two checks
        return ProcessResult(
            returncode=proc.returncode,
            duration_s=time.monotonic() - started,
            timed_out=timed_out,
            aborted=aborted,
            output_exceeded=output_exceeded,
            watch_reason=watch_reason,
        )

    def _stop(self, proc: subprocess.Popen[bytes], pgid: int, *, hard: bool) -> None:
        if not hard:
            kill_group(pgid, signal.SIGTERM)
            try:
                proc.wait(timeout=self.term_grace_s)
                return
            except subprocess.TimeoutExpired:
                pass
        kill_group(pgid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=10)


def read_tail(path: Path, max_bytes: int) -> str:
    """The last ``max_bytes`` of a file as text (invalid UTF-8 replaced)."""
    try:
        with open(path, "rb") as handle:
            size = os.fstat(handle.fileno()).st_size
            handle.seek(max(0, size - max_bytes))
            return handle.read(max_bytes).decode("utf-8", "replace")
    except OSError:
        return ""
