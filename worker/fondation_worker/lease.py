"""Keeping a job's lease: one heartbeat thread per job, and self-fencing.

The worker's own view of when its lease ends is conservative: the time it *sent* the last
successful claim or heartbeat plus ``LEASE_MS``, on the monotonic clock (Convex's
``leaseUntil`` is on another machine's clock). When a renewal fails and the next attempt
could only land after that moment, the worker fences itself: the job is aborted with
reason ``fence`` (its process group killed at once, its output discarded) and nothing more
is sent for it - another worker may own it by then.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from .clock import Clock
from .errors import ConvexCodedError, LeaseLost, Unauthorized, WorkerError
from .logging_setup import get_logger
from .metrics import Metrics
from .models import HeartbeatReply, Progress
from .process import AbortSignal

log = get_logger(__name__)


def must_fence(
    now: float, lease_deadline: float, next_try_in: float, call_timeout: float, margin: float
) -> bool:
    """True when a renewal tried ``next_try_in`` from ``now`` could end after the lease."""
    return now + next_try_in + call_timeout + margin >= lease_deadline


def fence_margin(lease_s: float) -> float:
    """Time kept in hand to kill the process group before the lease ends."""
    return max(0.25, min(5.0, lease_s * 0.05))


def retry_interval(heartbeat_s: float) -> float:
    """How soon a failed heartbeat is tried again."""
    return max(0.2, min(5.0, heartbeat_s / 4))


class ProgressBox:
    """The latest progress of a job, written by the job thread, sent by the heartbeat."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._progress: Progress | None = None

    def set(self, progress: Progress) -> None:
        with self._lock:
            self._progress = progress

    def get(self) -> Progress | None:
        with self._lock:
            return self._progress


class LeaseFile:
    """The lease deadline where the lease watchdog reads it (``watchdog.py``).

    Written on every renewal as a ``time.monotonic()`` value (the system-wide monotonic
    clock the watchdog reads too), converted from the worker's clock, so the watchdog,
    outside the worker's loop, kills the job's processes once the worker stops renewing,
    even if the worker itself is frozen. Atomic writes (temp file and rename).
    """

    def __init__(self, clock: Clock, deadline: float) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._deadline = deadline
        self._path: Path | None = None

    @property
    def path(self) -> Path | None:
        return self._path

    def attach(self, path: Path) -> None:
        """Start writing to ``path`` (in the job's workspace), now with the current deadline."""
        with self._lock:
            self._path = path
            self._write()

    def update(self, deadline: float) -> None:
        with self._lock:
            self._deadline = deadline
            self._write()

    def _write(self) -> None:
        if self._path is None:
            return
        system_deadline = time.monotonic() + (self._deadline - self._clock.monotonic())
        tmp = self._path.with_name(self._path.name + ".tmp")
        try:
            with open(tmp, "w", encoding="ascii") as handle:
                handle.write(f"{system_deadline:.3f}\n")
            os.replace(tmp, self._path)
        except OSError as exc:
            # The watchdog then stops the job at the last deadline it read: the job fails and
            # is retried, which is safer than a run that might outlive its lease.
            log.warning("lease.file_not_written", problem=str(exc))
            with contextlib.suppress(OSError):
                tmp.unlink()


HeartbeatCall = Callable[[Progress | None, float], HeartbeatReply]
"""Sends one heartbeat with (progress, timeout_s); raises on failure."""


@dataclass
class LeaseState:
    deadline: float
    renewals: int = 0
    failures: int = 0
    fenced: bool = False


class Heartbeat:
    """Renews one job's lease every ``interval_s`` until stopped; fences itself if it must."""

    def __init__(
        self,
        *,
        send: HeartbeatCall,
        lease_s: float,
        interval_s: float,
        call_timeout_s: float,
        claimed_at: float,
        abort: AbortSignal,
        progress: ProgressBox,
        clock: Clock,
        metrics: Metrics,
        lease_file: LeaseFile | None = None,
    ) -> None:
        self._send = send
        self._lease_file = lease_file
        self._lease_s = lease_s
        self._interval_s = interval_s
        self._call_timeout_s = call_timeout_s
        self._abort = abort
        self._progress = progress
        self._clock = clock
        self._metrics = metrics
        self._stop = threading.Event()
        self.state = LeaseState(deadline=claimed_at + lease_s)
        self._thread: threading.Thread | None = None

    def start(self, name: str = "heartbeat") -> None:
        # The job's contextvars (job id, attempt) are copied into the thread.
        import contextvars

        ctx = contextvars.copy_context()
        self._thread = threading.Thread(target=ctx.run, args=(self.run,), name=name, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop renewing (before the job's final call); waits for an in-flight call."""
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=self._call_timeout_s + 5)

    def seconds_left(self) -> float:
        return self.state.deadline - self._clock.monotonic()

    def run(self) -> None:
        retry_s = retry_interval(self._interval_s)
        margin = fence_margin(self._lease_s)
        next_in = self._interval_s
        while not self._clock.wait(self._stop, next_in):
            sent = self._clock.monotonic()
            try:
                reply = self._send(self._progress.get(), self._call_timeout_s)
            except (LeaseLost, ConvexCodedError, Unauthorized) as exc:
                if self._stop.is_set():
                    # Answered after stop() gave up waiting: the job's final call has ended
                    # the lease meanwhile (and is fenced on its own if it was really lost).
                    log.info("lease.reply_after_stop", problem=f"{type(exc).__name__}: {exc}")
                    return
                # The lease is gone for sure, or Convex refuses to renew it (not found,
                # invalid state, bad arguments, token refused): retrying cannot help.
                self._fence(f"{type(exc).__name__}: {exc}")
                return
            except (WorkerError, OSError) as exc:
                self.state.failures += 1
                self._metrics.lease_renew_failures.inc()
                now = self._clock.monotonic()
                left = self.state.deadline - now
                if must_fence(now, self.state.deadline, retry_s, self._call_timeout_s, margin):
                    self._fence(f"lease cannot be renewed before it ends ({exc})")
                    return
                log.warning(
                    "lease.renew_failed",
                    problem=str(exc),
                    seconds_left=round(left, 2),
                    failures=self.state.failures,
                )
                next_in = retry_s
                continue
            if self._stop.is_set():
                return
            self.state.deadline = sent + self._lease_s
            if self._lease_file is not None:
                self._lease_file.update(self.state.deadline)
            self.state.renewals += 1
            if self.state.failures:
                log.info("lease.renewed_again", after_failures=self.state.failures)
            self.state.failures = 0
            next_in = self._interval_s
            if reply.cancel_requested and self._abort.abort("cancel"):
                log.info("job.cancel_requested")

    def _fence(self, why: str) -> None:
        self.state.fenced = True
        self._metrics.fenced.inc()
        if self._lease_file is not None:
            self._lease_file.update(0.0)  # the watchdog stops the job's processes too
        self._abort.abort("fence")
        log.error("lease.fenced", reason=why)
