"""The worker loop: run up to MAX_CONCURRENT_JOBS, heartbeat each, pause, drain.

- Each of the MAX_CONCURRENT_JOBS slots is offered to Convex's dispatcher while free; the
  dispatcher assigns a due job to one idle slot of the fleet and the worker accepts it
  (jobs:claimOne). When to call is ClaimTiming's decision (claim_timing.py): at once when
  this worker's assignments subscription (wakeup.py) shows a job for a free slot, else on
  polls (every SAFETY_POLL_MS while subscribed, POLL_INTERVAL_MS backing off to
  IDLE_POLL_MAX_MS while not).
- A job's final call offers its slot again in the same call, unless the worker is pausing
  or stopping; a pause or a drain withdraws the slots (jobs:withdraw).
- One thread per job and one heartbeat thread per job (see lease.py for self-fencing).
- Auth and usage-limit failures (the rule: pause.py) mark the worker not ready and pause
  claiming until a re-check (a tiny real Claude call) passes; low disk pauses claiming
  until space is back.
- Shutdown: the first SIGTERM/SIGINT stops claiming and lets jobs finish for up to
  DRAIN_TIMEOUT_MS, then releases them; a second signal releases them at once.

Time and processes are parameters (``Clock``, the job runner, the probe), so tests can
drive the loop without real waiting.
"""

from __future__ import annotations

import contextlib
import os
import queue
import random
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Literal, Protocol

import structlog

from .claim_timing import ClaimTiming, accept_ms
from .classify import Classification
from .clock import Clock
from .config import Settings
from .convex_client import QueueApi
from .errors import ConvexUnavailable, ErrorKind, OperatorActionNeeded, WorkerError
from .health import STARTUP_CHECK_REASON, HealthState
from .job_runner import JobContext, JobOutcome
from .lease import Heartbeat, LeaseFile, ProgressBox
from .logging_setup import get_logger
from .metrics import Metrics
from .models import ClaimedJob, HeartbeatReply, Offer, Progress
from .pause import claude_pause
from .process import AbortSignal
from .units import seconds
from .wakeup import WakeSource
from .workspace import DiskStatus

log = get_logger(__name__)

# The loop sleeps until its next event (a job ended, a signal, poll time, a pause re-check,
# a deadline); it still ticks this often so /healthz (stale after 60 s) sees it alive.
LIVENESS_TICK_S = 15.0
DISK_RECHECK_S = 5.0
# After releasing, how long jobs get to kill their processes and make their last call
# (release is bounded to about 11 s) before the worker exits anyway. With the default
# DRAIN_TIMEOUT_MS of 90 s, the worker is gone within about 110 s of SIGTERM.
ABORT_GRACE_S = 20.0

PauseReason = Literal["auth", "usage_limit", "disk"]


class RunsJobs(Protocol):
    def run(self, job: ClaimedJob, ctx: JobContext) -> JobOutcome: ...


@dataclass
class _Running:
    job: ClaimedJob
    slot: int
    abort: AbortSignal
    heartbeat: Heartbeat
    thread: threading.Thread
    started: float
    deadline: float


@dataclass
class _Pause:
    reason: PauseReason
    until: float
    message: str
    probing: bool = False
    probe_result: Classification | None = field(default=None)


class Scheduler:
    def __init__(
        self,
        *,
        settings: Settings,
        queue_api: QueueApi,
        runner: RunsJobs,
        clock: Clock,
        health: HealthState,
        metrics: Metrics,
        disk: Callable[[], DiskStatus],
        sweep: Callable[[], object] | None = None,
        recover: Callable[[], object] | None = None,
        probe: Callable[[], Classification] | None = None,
        rand: Callable[[], float] = random.random,
        wakeup: WakeSource | None = None,
    ) -> None:
        self._s = settings
        self._queue = queue_api
        self._runner = runner
        self._clock = clock
        self._health = health
        self._metrics = metrics
        self._disk = disk
        self._sweep = sweep
        self._recover = recover
        self._probe = probe
        self._rand = rand
        self._wakeup = wakeup
        self._wake_version: int | None = None
        self._wake_live: bool | None = None
        self._timing = ClaimTiming(
            poll_interval_ms=settings.poll_interval_ms,
            idle_poll_max_ms=settings.idle_poll_max_ms,
            safety_poll_ms=settings.safety_poll_ms,
            rand=rand,
        )
        self._accept_ms = accept_ms(
            settings.idle_poll_max_ms, settings.convex_timeout_ms, settings.lease_ms
        )

        self._wake = threading.Event()
        self._done: queue.Queue[tuple[str, JobOutcome]] = queue.Queue()
        self._running: dict[str, _Running] = {}
        self._stop_level = 0  # set from signal handlers: a plain int, no locks
        self._draining = False
        self._drain_deadline = 0.0
        self._released_at: float | None = None
        self._pause: _Pause | None = None
        self._next_disk_check = 0.0
        self._convex_problem_logged: str | None = None
        self._claim_request_id: str | None = None
        self.iterations = 0  # loop passes, for tests and the bench (busy-loop guard)
        # Signal handlers must not take locks (Event.set does): they write a byte to this
        # pipe and a small thread turns it into a wake-up.
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_w, False)

    # --- control ----------------------------------------------------------------------

    def notify(self) -> None:
        """Something changed outside the loop (the wake subscription): look again now."""
        self._wake.set()

    def request_stop(self) -> None:
        """First call: drain. Second: release now. Safe to call from a signal handler."""
        self._stop_level = min(2, self._stop_level + 1)
        with contextlib.suppress(OSError):  # pipe full (already woken) or closed (stopped)
            os.write(self._wake_w, b"x")

    def _relay_wakeups(self) -> None:
        while True:
            try:
                data = os.read(self._wake_r, 64)
            except OSError:
                return
            if not data:
                return
            self._wake.set()

    @property
    def running_jobs(self) -> list[str]:
        return list(self._running)

    @property
    def paused(self) -> PauseReason | None:
        return self._pause.reason if self._pause else None

    # --- the loop ---------------------------------------------------------------------

    def run(self) -> int:
        """Run until stopped; 0 after a clean drain, 1 if jobs had to be abandoned."""
        if self._sweep is not None:
            self._sweep()
        if self._recover is not None:
            # After the sweep (which stops a predecessor's leftover Claude runs): jobs a
            # previous process with our id still holds are nobody's now, give them back.
            try:
                self._recover()
            except WorkerError as exc:
                log.warning("worker.recover_failed", problem=str(exc), fallback="lease expiry")
        if self._probe is not None:
            # Learn Claude's auth state before the first claim: a worker without working
            # credentials says so (readiness, logs) and leaves jobs to ready workers instead
            # of claiming them only to defer them. The first tick runs the probe.
            self._pause = _Pause(
                reason="auth", until=self._clock.monotonic(), message="checking Claude auth"
            )
            self._health.set_problem("claude", STARTUP_CHECK_REASON)
        log.info(
            "worker.started",
            worker_id=self._s.worker_id,
            max_concurrent_jobs=self._s.max_concurrent_jobs,
            poll_interval_ms=self._s.poll_interval_ms,
            idle_poll_max_ms=self._s.idle_poll_max_ms,
            lease_ms=self._s.lease_ms,
            heartbeat_ms=self._s.heartbeat_ms,
            wakeup=self._wakeup is not None,
            safety_poll_ms=self._s.safety_poll_ms,
        )
        relay = threading.Thread(target=self._relay_wakeups, name="wake-relay", daemon=True)
        relay.start()
        if self._wakeup is not None:
            self._health.set_notice("wakeup", "subscription not connected yet; polling over HTTP")
            self._wakeup.start(self.notify)
        try:
            return self._loop()
        finally:
            if self._wakeup is not None:
                self._wakeup.stop()
            # -1 first: a late signal must not write into a reused descriptor number.
            write_end, self._wake_w = self._wake_w, -1
            os.close(write_end)  # ends the relay thread (its read returns b"")
            relay.join(timeout=5)
            os.close(self._wake_r)

    def _loop(self) -> int:
        while True:
            self.iterations += 1
            # Cleared before looking at the queues, so a wake-up during this pass is kept.
            self._wake.clear()
            now = self._clock.monotonic()
            self._health.tick()
            self._reap()
            self._enforce_deadlines(now)
            if self._stop_level:
                if self._shutdown_step(now):
                    break
            else:
                self._follow_wakeup(now)
                self._update_pause(now)
                self._maybe_claim(now)
            self._clock.wait(self._wake, self._sleep_for(self._clock.monotonic()))
        abandoned = len(self._running)
        if abandoned:
            log.error("worker.exit_with_jobs", jobs=list(self._running))
        log.info("worker.stopped", abandoned=abandoned)
        return 1 if abandoned else 0

    def _sleep_for(self, now: float) -> float:
        """Seconds until the loop has something to do; job ends and signals wake it sooner."""
        events = [now + LIVENESS_TICK_S]
        events += [r.deadline for r in self._running.values() if r.abort.reason is None]
        if self._stop_level:
            if not self._draining or not self._running:
                return 0.0
            if self._released_at is None:
                events.append(self._drain_deadline)
            else:
                events.append(self._released_at + ABORT_GRACE_S)
        elif self._pause is not None:
            pause = self._pause
            if pause.reason == "disk":
                events.append(self._next_disk_check)
            elif pause.probing:
                # The probe thread wakes the loop with its result; nothing to do until then.
                pass
            else:
                events.append(pause.until)
        else:
            # At capacity there is nothing to claim for: a job's end wakes the loop.
            events.append(self._timing.next_event_at(now, self._free_slots()))
        return max(0.0, min(events) - now)

    # --- the wake path ----------------------------------------------------------------

    def _follow_wakeup(self, now: float) -> None:
        """Take in the subscription's latest state: a new answer is acted on at once."""
        if self._wakeup is None:
            return
        state = self._wakeup.state()
        if state.version == self._wake_version:
            return
        self._wake_version = state.version
        self._timing.wake_changed(state, now)
        if state.live and self._wake_live is not True:
            self._health.clear_notice("wakeup")
        elif not state.live:
            self._health.set_notice(
                "wakeup", f"subscription down ({state.down_reason}); polling over HTTP"
            )
        self._wake_live = state.live

    # --- claiming ---------------------------------------------------------------------

    def _free_slots(self) -> list[int]:
        busy = {r.slot for r in self._running.values()}
        return [s for s in range(self._s.max_concurrent_jobs) if s not in busy]

    def _maybe_claim(self, now: float) -> None:
        if self._pause is not None:
            return
        free = self._free_slots()
        if not self._timing.due(now, free):
            return
        # A worker short of disk would only claim a job to defer it for minutes while a
        # healthy worker could run it now: check first (a statvfs, cheap), pause if short.
        disk = self._disk()
        if not disk.ok:
            self._next_disk_check = now + DISK_RECHECK_S
            self._pause_for("disk", now, f"not enough free disk: {disk.describe()}")
            return
        # The same request id until a reply arrives: a claim whose reply was lost is
        # returned (not a second one, not another attempt) when the retry repeats it.
        if self._claim_request_id is None:
            self._claim_request_id = str(uuid.uuid4())
        slots = self._timing.order(free)
        why = self._timing.why(now, free)
        sent = self._clock.monotonic()
        try:
            # start=True: the job is running from its claim on (one call fewer per job).
            job = self._queue.claim_one(
                self._s.worker_id,
                self._s.lease_ms,
                self._claim_request_id,
                start=True,
                slots=slots,
                accept_ms=self._accept_ms,
            )
        except OperatorActionNeeded as exc:
            self._claim_request_id = None
            self._convex_problem(f"worker token refused by Convex, operator action needed: {exc}")
            self._timing.empty(now, ())
            return
        except WorkerError as exc:
            if not isinstance(exc, ConvexUnavailable):
                self._claim_request_id = None  # Convex answered: the request was not applied
            self._convex_problem(f"unreachable or failing: {exc}")
            self._timing.failed(now)
            return
        self._claim_request_id = None
        if self._health.clear_problem("convex"):
            log.info("convex.reachable_again")
            self._convex_problem_logged = None
        if job is None:
            self._timing.empty(now, slots)
            return
        slot = job.slot if job.slot in free else free[0]
        self._timing.claimed(now, slot, job.job_id)
        self._start_job(job, slot, sent, why)
        if self._stop_level:
            # The signal came while the claim was in flight: give the job straight back.
            self._running[job.job_id].abort.abort("shutdown")

    def _offer(self, slot: int, kind: ErrorKind | None) -> Offer | None:
        """What a job's final call offers back: its slot, unless the worker is stopping or
        about to pause (on a Claude auth or usage-limit failure, or low disk). Called from
        the job's thread: reads only flags the loop sets."""
        if self._stop_level or self._pause is not None:
            return None
        if kind == "disk" or (
            kind is not None and claude_pause(kind, None, self._s.auth_recheck_ms) is not None
        ):
            return None
        return Offer(slot=slot, accept_ms=self._accept_ms)

    def _withdraw(self, reason: str) -> None:
        """Take our slots out of dispatch (a pause, a drain). If the call fails, whatever
        gets assigned to them meanwhile goes back to the queue when its acceptMs runs out."""
        try:
            reply = self._queue.withdraw(self._s.worker_id, reason)
        except WorkerError as exc:
            log.warning("worker.withdraw_failed", problem=str(exc), fallback="acceptMs expiry")
        else:
            if reply.returned:
                log.info("worker.withdrew", returned=reply.returned)
        self._timing.withdrawn()

    def _convex_problem(self, reason: str) -> None:
        self._health.set_problem("convex", reason)
        if self._convex_problem_logged != reason:
            log.error("convex.problem", problem=reason)
            self._convex_problem_logged = reason

    # --- jobs -------------------------------------------------------------------------

    def _start_job(self, job: ClaimedJob, slot: int, claimed_at: float, why: str) -> None:
        abort = AbortSignal()
        progress = ProgressBox()
        lease_s = seconds(self._s.lease_ms)
        interval_s = seconds(self._s.heartbeat_ms)
        call_timeout_s = min(seconds(self._s.convex_timeout_ms), interval_s)
        queue_api = self._queue
        lease_ms = self._s.lease_ms

        def send(progress_now: Progress | None, timeout_s: float) -> HeartbeatReply:
            return queue_api.heartbeat(
                job.job_id, job.lease_token, lease_ms, progress_now, timeout_s=timeout_s
            )

        lease_file = LeaseFile(self._clock, claimed_at + lease_s)
        heartbeat = Heartbeat(
            send=send,
            lease_s=lease_s,
            interval_s=interval_s,
            call_timeout_s=call_timeout_s,
            claimed_at=claimed_at,
            abort=abort,
            progress=progress,
            clock=self._clock,
            metrics=self._metrics,
            lease_file=lease_file,
        )
        ctx = JobContext(
            abort=abort,
            progress=progress,
            stop_heartbeat=heartbeat.stop,
            lease_file=lease_file,
            offer=lambda kind: self._offer(slot, kind),
        )
        thread = threading.Thread(
            target=self._job_main,
            args=(job, ctx, heartbeat),
            name=f"job-{job.job_id}",
            daemon=True,
        )
        now = self._clock.monotonic()
        self._running[job.job_id] = _Running(
            job=job,
            slot=slot,
            abort=abort,
            heartbeat=heartbeat,
            thread=thread,
            started=now,
            deadline=now + seconds(self._s.job_timeout_ms),
        )
        self._health.job_started(job.job_id)
        self._metrics.jobs_claimed.inc()
        self._metrics.in_flight.set(len(self._running))
        log.info(
            "job.claimed",
            job_id=job.job_id,
            attempt=job.attempt,
            max_attempts=job.max_attempts,
            lease_until=job.lease_until,
            slot=slot,
            via=why,
        )
        thread.start()

    def _job_main(self, job: ClaimedJob, ctx: JobContext, heartbeat: Heartbeat) -> None:
        outcome = JobOutcome("lost", message="job thread ended without an outcome")
        with structlog.contextvars.bound_contextvars(job_id=job.job_id, attempt=job.attempt):
            heartbeat.start(name=f"heartbeat-{job.job_id}")
            try:
                outcome = self._runner.run(job, ctx)
            except BaseException:
                log.exception("job.crashed")
            finally:
                heartbeat.stop()
                self._done.put((job.job_id, outcome))
                self._wake.set()

    def _reap(self) -> None:
        while True:
            try:
                job_id, outcome = self._done.get_nowait()
            except queue.Empty:
                return
            running = self._running.pop(job_id, None)
            self._health.job_finished(job_id)
            if running is None:
                continue
            running.thread.join(timeout=5)
            elapsed = self._clock.monotonic() - running.started
            self._metrics.jobs_finished.labels(outcome=outcome.outcome).inc()
            self._metrics.job_duration.labels(outcome=outcome.outcome).observe(elapsed)
            self._metrics.in_flight.set(len(self._running))
            self._timing.slot_freed(self._clock.monotonic(), running.slot, outcome.offered)
            self._after_outcome(outcome)

    def _enforce_deadlines(self, now: float) -> None:
        for running in self._running.values():
            if now >= running.deadline and running.abort.abort("timeout"):
                log.warning("job.timeout", job_id=running.job.job_id)

    # --- readiness and pauses ---------------------------------------------------------

    def _after_outcome(self, outcome: JobOutcome) -> None:
        now = self._clock.monotonic()
        claude = claude_pause(outcome.kind, outcome.retry_after_ms, self._s.auth_recheck_ms)
        if claude is not None:
            wait_s = seconds(claude.wait_ms)
            if claude.reason == "auth":
                message = (
                    f"Claude authentication failed ({outcome.message}); operator action needed"
                )
            else:
                until = self._clock.now() + timedelta(seconds=wait_s)
                stamp = until.isoformat(timespec="seconds")
                message = f"Claude usage limit reached, paused until {stamp}"
            self._pause_for(claude.reason, now + wait_s, message)
        elif outcome.kind == "disk":
            self._pause_for("disk", now, outcome.message or "not enough free disk")
        elif outcome.outcome == "completed" and self._pause is None:
            self._health.clear_problem("claude")

    def _pause_for(self, reason: PauseReason, until: float, message: str) -> None:
        was_paused = self._pause is not None
        self._pause = _Pause(reason=reason, until=until, message=message)
        if not was_paused:
            self._withdraw(f"worker paused: {reason}")
        self._health.set_problem("disk" if reason == "disk" else "claude", message)
        log.warning(
            "worker.paused",
            reason=reason,
            message=message,
            resume_in_s=round(until - self._clock.monotonic(), 1),
        )

    def _update_pause(self, now: float) -> None:
        pause = self._pause
        if pause is None:
            return
        if pause.reason == "disk":
            if now < self._next_disk_check:
                return
            self._next_disk_check = now + DISK_RECHECK_S
            status = self._disk()
            if status.ok:
                self._resume("disk", f"disk ok again: {status.describe()}")
            else:
                self._health.set_problem("disk", f"not enough free disk: {status.describe()}")
            return
        if pause.probing:
            result = pause.probe_result
            if result is None:
                return
            pause.probing = False
            pause.probe_result = None
            claude = claude_pause(result.kind, result.retry_after_ms, self._s.auth_recheck_ms)
            if claude is None:
                self._resume("claude", f"claude re-check: {result.kind}")
                return
            wait_s = seconds(claude.wait_ms)
            pause.until = now + wait_s
            pause.reason = claude.reason
            if claude.reason == "auth":
                self._health.set_problem("claude", f"Claude authentication failed: {result.reason}")
                log.warning("worker.still_paused", reason="auth", problem=result.reason)
            else:
                self._health.set_problem("claude", f"Claude usage limit: {result.reason}")
                log.warning("worker.still_paused", reason="usage_limit", resume_in_s=wait_s)
            return
        if now < pause.until:
            return
        if self._probe is None:
            self._resume("claude", "pause over")
            return
        pause.probing = True
        probe = self._probe

        def run_probe() -> None:
            try:
                result = probe()
            except Exception as exc:  # a broken probe must not stop the loop
                result = Classification("transient", f"probe failed: {exc}")
            pause.probe_result = result
            self._wake.set()

        threading.Thread(target=run_probe, name="claude-probe", daemon=True).start()

    def _resume(self, key: str, why: str) -> None:
        self._pause = None
        self._health.clear_problem(key)
        self._timing.resumed(self._clock.monotonic())
        log.info("worker.resumed", why=why)

    # --- shutdown ---------------------------------------------------------------------

    def _shutdown_step(self, now: float) -> bool:
        """Advance the shutdown; True when the loop may end."""
        if not self._draining:
            self._draining = True
            self._drain_deadline = now + seconds(self._s.drain_timeout_ms)
            self._health.set_draining()
            log.info(
                "worker.draining",
                jobs=list(self._running),
                drain_timeout_ms=self._s.drain_timeout_ms,
            )
            self._withdraw("worker draining")
        if not self._running:
            return True
        if self._released_at is None and (self._stop_level >= 2 or now >= self._drain_deadline):
            self._released_at = now
            why = "second signal" if self._stop_level >= 2 else "drain timeout"
            log.warning("worker.releasing_jobs", why=why, jobs=list(self._running))
            for running in self._running.values():
                running.abort.abort("shutdown")
        return self._released_at is not None and now - self._released_at >= ABORT_GRACE_S
