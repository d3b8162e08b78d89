from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import pytest
from pydantic import SecretStr

from fondation_worker.classify import Classification
from fondation_worker.clock import SystemClock
from fondation_worker.errors import ConvexUnavailable, Unauthorized
from fondation_worker.health import HealthState
from fondation_worker.job_runner import JobContext, JobOutcome
from fondation_worker.metrics import Metrics
from fondation_worker.models import ClaimedJob, HeartbeatReply, Progress, WithdrawReply
from fondation_worker.scheduler import Scheduler
from fondation_worker.workspace import DiskStatus
from tests.support import make_settings, wait_until
from tests.support.fakeclock import FakeClock


def claimed(n: int) -> ClaimedJob:
    return ClaimedJob.model_validate(
        {
            "jobId": f"job{n}",
            "leaseToken": f"{n}.lease",
            "leaseUntil": 0,
            "attempt": 1,
            "maxAttempts": 3,
            "repoUrl": "https://github.com/a/b",
            "branch": None,
            "userId": "u",
        }
    )


class FakeQueue:
    def __init__(self, jobs: int = 0, clock: Any = None) -> None:
        self.jobs = [claimed(i) for i in range(jobs)]
        self.claims: list[float] = []
        self.request_ids: list[str | None] = []
        self.heartbeats: list[tuple[str, Progress | None]] = []
        self.cancel: set[str] = set()
        self.claim_error: Exception | None = None
        self.slots: list[tuple[int, ...]] = []
        self.withdrawals: list[str] = []
        self.clock = clock or SystemClock()
        self.on_claim: Callable[[], None] | None = None
        self.lock = threading.Lock()

    def claim_one(
        self,
        worker_id: str,
        lease_ms: int,
        request_id: str | None = None,
        *,
        start: bool = False,
        slots: Sequence[int] = (0,),
        accept_ms: int | None = None,
    ) -> Any:
        with self.lock:
            self.claims.append(self.clock.monotonic())
            self.request_ids.append(request_id)
            self.slots.append(tuple(slots))
            if self.on_claim:
                self.on_claim()
            if self.claim_error is not None:
                raise self.claim_error
            if not self.jobs:
                return None
            return self.jobs.pop(0).model_copy(update={"slot": slots[0]})

    def withdraw(self, worker_id: str, reason: str, slots: Sequence[int] | None = None) -> Any:
        self.withdrawals.append(reason)
        return WithdrawReply(withdrawn=0, returned=0)

    def heartbeat(
        self,
        job_id: str,
        lease_token: SecretStr,
        lease_ms: int,
        progress: Progress | None = None,
        *,
        timeout_s: float | None = None,
    ) -> Any:
        self.heartbeats.append((job_id, progress))
        return HeartbeatReply(cancelRequested=job_id in self.cancel, leaseUntil=0)

    def __getattr__(self, name: str) -> Any:  # the job runner is faked: nothing else is called
        raise AssertionError(f"unexpected call {name}")


class FakeRunner:
    """Runs each job until ``release`` is set, its abort is set, or at once."""

    def __init__(self, outcome: JobOutcome | None = None, block: bool = False) -> None:
        self.outcome = outcome or JobOutcome("completed", docs=1)
        self.block = block
        self.release = threading.Event()
        self.started: list[str] = []
        self.aborts: dict[str, str | None] = {}
        self.running = 0
        self.max_running = 0
        self.lock = threading.Lock()

    def run(self, job: ClaimedJob, ctx: JobContext) -> JobOutcome:
        with self.lock:
            self.started.append(job.job_id)
            self.running += 1
            self.max_running = max(self.max_running, self.running)
        try:
            if self.block:
                while not self.release.is_set() and not ctx.abort.is_set():
                    time.sleep(0.01)
            ctx.stop_heartbeat()
            self.aborts[job.job_id] = ctx.abort.reason
            if ctx.abort.reason == "shutdown":
                return JobOutcome("released", "shutdown")
            if ctx.abort.reason == "cancel":
                return JobOutcome("canceled")
            if ctx.abort.reason == "timeout":
                return JobOutcome("failed", "timeout")
            return self.outcome
        finally:
            with self.lock:
                self.running -= 1


DISK_OK = DiskStatus(free_mb=1000, min_free_mb=10)
DISK_LOW = DiskStatus(free_mb=1, min_free_mb=10)


class FakeDisk:
    """The scheduler's disk readings: ``first`` in order, then ``then`` (which a test may
    change while the loop runs, as free space comes back)."""

    def __init__(self, *first: DiskStatus, then: DiskStatus) -> None:
        self.first = list(first)
        self.then = then

    def __call__(self) -> DiskStatus:
        return self.first.pop(0) if self.first else self.then


def make(
    queue: FakeQueue,
    runner: FakeRunner,
    clock: Any = None,
    *,
    disk_ok: bool = True,
    disk: Callable[[], DiskStatus] | None = None,
    probe: Callable[[], Classification] | None = None,
    recover: Callable[[], object] | None = None,
    wakeup: Any = None,
    **overrides: Any,
) -> tuple[Scheduler, HealthState, Metrics]:
    values: dict[str, Any] = {
        "poll_interval_ms": 100,
        "idle_poll_max_ms": 400,
        "lease_ms": 2000,
        "heartbeat_ms": 200,
        "drain_timeout_ms": 1000,
        "auth_recheck_ms": 1000,
    }
    values.update(overrides)
    settings = make_settings(**values)
    clock = clock or SystemClock()
    metrics = Metrics()
    health = HealthState(clock, metrics)
    if disk is None:
        disk = FakeDisk(then=DISK_OK if disk_ok else DISK_LOW)
    scheduler = Scheduler(
        settings=settings,
        queue_api=queue,
        runner=runner,
        clock=clock,
        health=health,
        metrics=metrics,
        disk=disk,
        recover=recover,
        probe=probe,
        rand=lambda: 0.5,
        wakeup=wakeup,
    )
    return scheduler, health, metrics


class Loop:
    def __init__(self, scheduler: Scheduler) -> None:
        self.scheduler = scheduler
        self.code: int | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        self.code = self.scheduler.run()

    def stop(self, times: int = 1, timeout: float = 15) -> int | None:
        for _ in range(times):
            self.scheduler.request_stop()
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "scheduler did not stop"
        return self.code


def test_health_names_the_jobs_being_run() -> None:
    queue = FakeQueue(jobs=2)
    runner = FakeRunner(block=True)
    scheduler, health, _ = make(queue, runner, max_concurrent_jobs=1)
    assert health.readiness()[1]["current_job"] is None
    loop = Loop(scheduler)
    wait_until(lambda: runner.started == ["job0"], 5)
    assert health.readiness()[1]["current_job"] == "job0"
    assert health.liveness()[1]["current_jobs"] == ["job0"]
    runner.release.set()
    wait_until(lambda: len(runner.started) == 2 and runner.running == 0, 5)
    wait_until(lambda: health.readiness()[1]["current_job"] is None, 5)
    assert loop.stop() == 0
    assert health.liveness()[1]["current_jobs"] == []


def test_idle_worker_makes_about_120_calls_an_hour() -> None:
    clock = FakeClock()
    queue = FakeQueue(clock=clock)
    scheduler, _, _ = make(
        queue, FakeRunner(), clock, poll_interval_ms=5000, idle_poll_max_ms=30000
    )
    start = clock.monotonic()

    def stop_after_an_hour() -> None:
        if clock.monotonic() - start >= 3600:
            scheduler.request_stop()

    queue.on_claim = stop_after_an_hour
    assert scheduler.run() == 0
    in_hour = [t for t in queue.claims if t - start < 3600]
    assert 110 <= len(in_hour) <= 130
    gaps = [b - a for a, b in zip(queue.claims, queue.claims[1:], strict=False)]
    assert gaps[:4] == pytest.approx([5.0 * 0.975, 10 * 0.975, 20 * 0.975, 30 * 0.975], rel=0.01)
    assert max(gaps) <= 30.0


def test_polls_at_poll_interval_while_work_is_found_and_caps_concurrency() -> None:
    queue = FakeQueue(jobs=5)
    runner = FakeRunner(block=True)
    scheduler, _, metrics = make(queue, runner, max_concurrent_jobs=2)
    loop = Loop(scheduler)
    wait_until(lambda: len(runner.started) == 2, 5)
    time.sleep(0.5)
    assert len(queue.claims) == 2  # no calls while all slots are busy
    runner.release.set()
    wait_until(lambda: len(runner.started) == 5, 10)
    assert loop.stop() == 0
    assert runner.max_running == 2
    assert metrics.registry.get_sample_value("fondation_worker_jobs_claimed_total") == 5
    assert (
        metrics.registry.get_sample_value(
            "fondation_worker_jobs_finished_total", {"outcome": "completed"}
        )
        == 5
    )


def test_heartbeats_carry_progress_and_cancel_stops_the_job() -> None:
    queue = FakeQueue(jobs=1)
    runner = FakeRunner(block=True)
    scheduler, _, metrics = make(queue, runner)
    loop = Loop(scheduler)
    wait_until(lambda: len(queue.heartbeats) >= 2, 5)
    queue.cancel.add("job0")
    wait_until(lambda: "job0" in runner.aborts, 5)
    assert runner.aborts["job0"] == "cancel"
    assert loop.stop() == 0
    assert (
        metrics.registry.get_sample_value(
            "fondation_worker_jobs_finished_total", {"outcome": "canceled"}
        )
        == 1
    )


def test_drain_lets_running_jobs_finish() -> None:
    queue = FakeQueue(jobs=3)
    runner = FakeRunner(block=True)
    scheduler, health, _ = make(queue, runner, drain_timeout_ms=5000)
    loop = Loop(scheduler)
    wait_until(lambda: runner.started, 5)
    scheduler.request_stop()
    wait_until(lambda: health.readiness()[1]["checks"]["draining"], 5)
    claims = len(queue.claims)
    time.sleep(0.3)
    runner.release.set()
    loop.thread.join(10)
    assert loop.code == 0
    assert runner.aborts == {"job0": None}
    assert len(queue.claims) == claims  # no claim after the signal


def test_drain_timeout_releases_jobs() -> None:
    queue = FakeQueue(jobs=1)
    runner = FakeRunner(block=True)
    scheduler, _, metrics = make(queue, runner, drain_timeout_ms=500)
    loop = Loop(scheduler)
    wait_until(lambda: runner.started, 5)
    t0 = time.monotonic()
    assert loop.stop() == 0
    assert 0.4 <= time.monotonic() - t0 < 5
    assert runner.aborts == {"job0": "shutdown"}
    assert (
        metrics.registry.get_sample_value(
            "fondation_worker_jobs_finished_total", {"outcome": "released"}
        )
        == 1
    )


def test_second_signal_releases_at_once() -> None:
    queue = FakeQueue(jobs=1)
    runner = FakeRunner(block=True)
    scheduler, _, _ = make(queue, runner, drain_timeout_ms=600_000)
    loop = Loop(scheduler)
    wait_until(lambda: runner.started, 5)
    t0 = time.monotonic()
    assert loop.stop(times=2) == 0
    assert time.monotonic() - t0 < 3
    assert runner.aborts == {"job0": "shutdown"}


def test_job_timeout_aborts_the_job() -> None:
    queue = FakeQueue(jobs=1)
    runner = FakeRunner(block=True)
    scheduler, _, _ = make(
        queue, runner, job_timeout_ms=1000, step_timeout_ms=1000, clone_timeout_ms=1000
    )
    loop = Loop(scheduler)
    wait_until(lambda: "job0" in runner.aborts, 5)
    assert runner.aborts["job0"] == "timeout"
    loop.stop()


def test_auth_failure_pauses_claiming_until_the_recheck_passes() -> None:
    queue = FakeQueue(jobs=3)
    runner = FakeRunner(JobOutcome("deferred", "auth", "Not logged in"))
    # The start-up probe passes; the job then fails on auth; one re-check fails, one passes.
    verdicts = [
        Classification("ok", "fine"),
        Classification("auth", "Not logged in"),
        Classification("ok", "fine"),
    ]
    probes: list[float] = []

    def probe() -> Classification:
        probes.append(time.monotonic())
        return verdicts.pop(0)

    scheduler, health, _ = make(queue, runner, probe=probe, auth_recheck_ms=300)
    loop = Loop(scheduler)
    wait_until(lambda: len(runner.started) == 1 and scheduler.paused == "auth", 5)
    ready, body = health.readiness()
    assert not ready
    assert any(r.startswith("claude: Claude authentication failed") for r in body["reasons"])
    claims = len(queue.claims)
    wait_until(lambda: len(probes) == 2, 5)
    assert len(queue.claims) == claims  # nothing claimed while paused
    assert scheduler.paused == "auth"  # the first re-check still failed
    runner.outcome = JobOutcome("completed", docs=1)
    wait_until(lambda: len(probes) == 3 and scheduler.paused is None, 5)
    wait_until(lambda: len(runner.started) == 3, 5)
    wait_until(lambda: health.readiness()[0], 5)
    loop.stop()


def test_without_claude_auth_at_start_the_worker_says_so_and_claims_nothing() -> None:
    queue = FakeQueue(jobs=2)
    runner = FakeRunner(JobOutcome("completed", docs=1))
    scheduler, health, _ = make(
        queue,
        runner,
        probe=lambda: Classification("auth", "Not logged in · Please run /login"),
        auth_recheck_ms=200,
    )
    loop = Loop(scheduler)
    wait_until(lambda: any("Not logged in" in r for r in health.readiness()[1]["reasons"]), 5)
    time.sleep(0.6)  # several re-checks
    assert not health.readiness()[0]
    assert scheduler.paused == "auth"
    assert queue.claims == []  # the jobs stay queued for workers that can run them
    assert runner.started == []
    loop.stop()


def test_usage_limit_pauses_until_the_reset() -> None:
    queue = FakeQueue(jobs=2)
    runner = FakeRunner(JobOutcome("deferred", "usage_limit", "limit", retry_after_ms=800))
    scheduler, health, _ = make(queue, runner, probe=lambda: Classification("ok", "fine"))
    loop = Loop(scheduler)
    wait_until(lambda: scheduler.paused == "usage_limit", 5)
    t0 = time.monotonic()
    assert "usage limit" in health.readiness()[1]["reasons"][0]
    runner.outcome = JobOutcome("completed")
    wait_until(lambda: len(runner.started) == 2, 5)
    assert time.monotonic() - t0 >= 0.6
    loop.stop()


def test_disk_failure_during_a_job_pauses_until_space_is_back() -> None:
    queue = FakeQueue(jobs=2)
    runner = FakeRunner(JobOutcome("deferred", "disk", "not enough free disk"))
    # Space is there at claim time and gone once the job has started (it filled the disk).
    disk = FakeDisk(DISK_OK, then=DISK_LOW)
    scheduler, health, _ = make(queue, runner, disk=disk)
    loop = Loop(scheduler)
    wait_until(lambda: scheduler.paused == "disk", 5)
    assert health.readiness()[1]["checks"]["disk"] is False
    time.sleep(0.5)
    assert len(runner.started) == 1
    disk.then = DISK_OK
    wait_until(lambda: len(runner.started) == 2, 15)
    loop.stop()


def test_a_worker_short_of_disk_claims_nothing_until_space_is_back() -> None:
    queue = FakeQueue(jobs=1)
    runner = FakeRunner()
    disk = FakeDisk(then=DISK_LOW)
    scheduler, health, _ = make(queue, runner, disk=disk)
    loop = Loop(scheduler)
    wait_until(lambda: scheduler.paused == "disk", 5)
    assert health.readiness()[1]["checks"]["disk"] is False
    time.sleep(0.5)
    assert queue.claims == []
    disk.then = DISK_OK
    wait_until(lambda: runner.started == ["job0"], 15)
    assert health.readiness()[1]["checks"]["disk"] is True
    loop.stop()


@pytest.mark.parametrize(
    ("error", "reason"),
    [(ConvexUnavailable("down"), "unreachable"), (Unauthorized("no"), "worker token refused")],
)
def test_convex_problems_make_the_worker_not_ready(error: Exception, reason: str) -> None:
    queue = FakeQueue(jobs=1)
    queue.claim_error = error
    scheduler, health, _ = make(queue, FakeRunner())
    loop = Loop(scheduler)
    wait_until(lambda: health.problem("convex"), 5)
    assert not health.readiness()[0]
    assert reason in health.readiness()[1]["reasons"][0]
    queue.claim_error = None
    wait_until(lambda: health.readiness()[0], 5)
    loop.stop()


def test_a_job_claimed_while_stopping_is_given_back_at_once() -> None:
    queue = FakeQueue(jobs=1)
    runner = FakeRunner(block=True)
    scheduler, _, _ = make(queue, runner, drain_timeout_ms=600_000)
    queue.on_claim = scheduler.request_stop  # the signal lands during the claim call
    t0 = time.monotonic()
    assert scheduler.run() == 0
    assert time.monotonic() - t0 < 5
    assert runner.aborts == {"job0": "shutdown"}


class LoopOnlyClock(FakeClock):
    """Fake time that only the scheduler's own waits move; other threads wait for real.

    So the loop's sleeps alone decide how fast time passes: a loop that spins (waits 0)
    never gets a long job to its end, one that sleeps until its next event does.
    """

    def __init__(self) -> None:
        super().__init__()
        self.loop_thread: threading.Thread | None = None

    def wait(self, event: threading.Event, timeout: float) -> bool:
        if threading.current_thread() is self.loop_thread:
            return super().wait(event, timeout)
        return event.wait(min(timeout, 0.005))


def test_the_loop_sleeps_while_every_slot_is_busy() -> None:
    clock = LoopOnlyClock()
    queue = FakeQueue(jobs=1, clock=clock)
    job_s = 3600.0
    scheduler: Scheduler | None = None

    class LongJob(FakeRunner):
        def run(self, job: ClaimedJob, ctx: JobContext) -> JobOutcome:
            started = clock.monotonic()
            # Ends after an hour of fake time, or when the loop has spun far too often.
            while clock.monotonic() - started < job_s and scheduler is not None:
                if scheduler.iterations > 100_000:
                    break
                time.sleep(0.001)
            ctx.stop_heartbeat()
            return JobOutcome("completed", docs=1)

    scheduler, _, _ = make(
        queue,
        LongJob(),
        clock,
        poll_interval_ms=5000,
        idle_poll_max_ms=30000,
        lease_ms=90_000,
        heartbeat_ms=20_000,
        job_timeout_ms=7_200_000,
        max_concurrent_jobs=1,
    )
    done = threading.Event()

    def finish_after_the_job() -> None:
        if len(queue.claims) >= 2:  # the poll after the job: the job is over
            scheduler.request_stop()
            done.set()

    queue.on_claim = finish_after_the_job
    clock.loop_thread = threading.current_thread()
    t0 = clock.monotonic()
    assert scheduler.run() == 0
    assert done.is_set()
    elapsed = clock.monotonic() - t0
    assert elapsed >= job_s
    # One pass per liveness tick (15 s) of the fake time that passed, plus a handful around
    # the job's ends. Measured against the time that passed, not the job's length: on a busy
    # machine the job thread notices its hour is over a few ticks late (a loop that spun
    # would not move fake time at all and never get there).
    assert scheduler.iterations <= elapsed / 15 + 20, (scheduler.iterations, elapsed)


def test_a_stop_request_wakes_an_idle_loop_at_once() -> None:
    queue = FakeQueue()
    scheduler, _, _ = make(queue, FakeRunner(), poll_interval_ms=30_000, idle_poll_max_ms=60_000)
    loop = Loop(scheduler)
    wait_until(lambda: len(queue.claims) == 1, 5)
    time.sleep(0.2)  # the loop is now asleep until its next poll, 30 s away
    passes = scheduler.iterations
    t0 = time.monotonic()
    assert loop.stop() == 0
    assert time.monotonic() - t0 < 2
    assert scheduler.iterations - passes <= 3


def test_a_claim_whose_reply_was_lost_is_repeated_with_the_same_request_id() -> None:
    queue = FakeQueue(jobs=1)
    failures = [ConvexUnavailable("lost reply"), ConvexUnavailable("lost reply")]

    def lose_two_replies() -> None:
        queue.claim_error = failures.pop(0) if failures else None

    queue.on_claim = lose_two_replies
    runner = FakeRunner()
    scheduler, _, _ = make(queue, runner, poll_interval_ms=100, idle_poll_max_ms=100)
    loop = Loop(scheduler)
    wait_until(lambda: runner.started == ["job0"] and len(queue.claims) >= 5, 10)
    assert loop.stop() == 0
    ids = queue.request_ids
    # Two polls lost their reply, the third got the job: one request id for all three.
    assert ids[0] is not None
    assert ids[0] == ids[1] == ids[2]
    # Every later poll got a reply (no job), so each has its own id.
    assert len(set(ids[2:5])) == 3


def test_a_refused_claim_is_not_repeated_with_its_request_id() -> None:
    queue = FakeQueue()
    queue.claim_error = Unauthorized("no")
    scheduler, _, _ = make(queue, FakeRunner(), poll_interval_ms=100, idle_poll_max_ms=100)
    loop = Loop(scheduler)
    wait_until(lambda: len(queue.claims) >= 2, 10)
    assert loop.stop() == 0
    assert queue.request_ids[0] != queue.request_ids[1]


def test_jobs_a_predecessor_held_are_given_back_before_the_first_claim() -> None:
    queue = FakeQueue(jobs=1)
    order: list[str] = []
    queue.on_claim = lambda: order.append("claim")
    runner = FakeRunner()
    scheduler, _, _ = make(queue, runner, recover=lambda: order.append("recover"))
    loop = Loop(scheduler)
    wait_until(lambda: runner.started == ["job0"], 5)
    assert loop.stop() == 0
    assert order[:2] == ["recover", "claim"]


def test_a_failed_give_back_at_start_does_not_stop_the_worker() -> None:
    queue = FakeQueue(jobs=1)

    def recover() -> None:
        raise ConvexUnavailable("jobs:recoverWorker: down")

    runner = FakeRunner()
    scheduler, _, _ = make(queue, runner, recover=recover)
    loop = Loop(scheduler)
    wait_until(lambda: runner.started == ["job0"], 5)  # lease expiry remains the fallback
    assert loop.stop() == 0


def test_a_final_call_offers_the_slot_back_unless_the_worker_pauses_or_stops() -> None:
    queue = FakeQueue(jobs=2)
    offers: dict[str, object] = {}

    class OfferingRunner(FakeRunner):
        def run(self, job: ClaimedJob, ctx: JobContext) -> JobOutcome:
            for kind in (None, "transient", "permanent", "auth", "usage_limit", "disk"):
                offers[f"{job.job_id}:{kind}"] = ctx.offer(kind)  # type: ignore[arg-type]
            if job.job_id == "job0":
                return JobOutcome("completed", docs=1, offered=True)
            while not ctx.abort.is_set():
                time.sleep(0.01)
            offers[f"{job.job_id}:draining"] = ctx.offer(None)
            return JobOutcome("released", "shutdown")

    scheduler, _, _ = make(queue, OfferingRunner(), max_concurrent_jobs=1)
    loop = Loop(scheduler)
    wait_until(lambda: "job1:disk" in offers, 10)
    loop.stop(times=2)
    first = offers["job0:None"]
    assert first is not None
    # acceptMs: bounded by this worker's 2 s lease, and by Convex's 5 s floor
    assert (first.slot, first.accept_ms) == (0, 5_000)  # type: ignore[attr-defined]
    assert offers["job0:transient"] == first
    assert offers["job0:permanent"] == first
    # the worker pauses on these: the slot must not take a job it would only defer
    assert offers["job0:auth"] is None
    assert offers["job0:usage_limit"] is None
    assert offers["job0:disk"] is None
    assert offers["job1:draining"] is None
    # the second job ran in the slot the first one offered back
    assert queue.slots[1][0] == 0
    assert queue.withdrawals == ["worker draining"]
