from __future__ import annotations

import threading
from typing import Any

import pytest

from fondation_worker.errors import ConvexLeaseLost, ConvexUnavailable, NotFound, Unauthorized
from fondation_worker.lease import (
    Heartbeat,
    ProgressBox,
    fence_margin,
    must_fence,
    retry_interval,
)
from fondation_worker.metrics import Metrics
from fondation_worker.models import HeartbeatReply, Progress
from fondation_worker.process import AbortSignal
from tests.support.fakeclock import FakeClock


def test_must_fence() -> None:
    # 90 s lease renewed at t=0; a retry in 5 s with a 10 s call and 4.5 s margin.
    assert not must_fence(70.0, 90.0, 5.0, 10.0, 4.5)
    assert must_fence(71.0, 90.0, 5.0, 10.0, 4.5)


def test_policy_numbers() -> None:
    assert fence_margin(90) == 4.5
    assert fence_margin(3) == 0.25
    assert retry_interval(20) == 5.0
    assert retry_interval(0.5) == 0.2


class Script:
    """Heartbeat replies in order; each entry is a reply dict or an exception."""

    def __init__(self, clock: FakeClock, items: list[Any], call_s: float = 0.0) -> None:
        self.clock = clock
        self.items = list(items)
        self.calls: list[tuple[float, Progress | None, float]] = []
        self.call_s = call_s
        self.stop_when_empty: Heartbeat | None = None

    def __call__(self, progress: Progress | None, timeout: float) -> HeartbeatReply:
        self.calls.append((self.clock.monotonic(), progress, timeout))
        self.clock.advance(self.call_s)
        item = self.items.pop(0) if self.items else {"cancelRequested": False, "leaseUntil": 0}
        if not self.items and self.stop_when_empty is not None:
            self.stop_when_empty.stop()
        if isinstance(item, Exception):
            raise item
        return HeartbeatReply.model_validate(item)


def heartbeat(
    clock: FakeClock,
    script: Script,
    lease: float = 3.0,
    every: float = 1.0,
    call_timeout: float = 1.0,
) -> tuple[Heartbeat, AbortSignal, ProgressBox]:
    abort = AbortSignal()
    progress = ProgressBox()
    hb = Heartbeat(
        send=script,
        lease_s=lease,
        interval_s=every,
        call_timeout_s=call_timeout,
        claimed_at=clock.monotonic(),
        abort=abort,
        progress=progress,
        clock=clock,
        metrics=Metrics(),
    )
    script.stop_when_empty = hb
    return hb, abort, progress


def ok(cancel: bool = False) -> dict[str, Any]:
    return {"cancelRequested": cancel, "leaseUntil": 1.0}


def test_renews_every_interval_and_sends_progress() -> None:
    clock = FakeClock()
    script = Script(clock, [ok(), ok(), ok()])
    hb, abort, progress = heartbeat(clock, script)
    progress.set(Progress(step="chapters", current_step=4, total_steps=5))
    hb.run()
    assert [round(t - 1000, 3) for t, _, _ in script.calls] == [1.0, 2.0, 3.0]
    assert script.calls[0][1] == Progress(step="chapters", current_step=4, total_steps=5)
    # The last reply arrives after stop(): it is ignored, the job has moved on.
    assert hb.state.renewals == 2
    assert abort.reason is None


def test_cancel_requested_aborts_with_cancel() -> None:
    clock = FakeClock()
    script = Script(clock, [ok(), ok(cancel=True), ok()])
    hb, abort, _ = heartbeat(clock, script)
    hb.run()
    assert abort.reason == "cancel"


@pytest.mark.parametrize("exc", [ConvexLeaseLost("gone"), NotFound("x"), Unauthorized("x")])
def test_lost_lease_fences_at_once(exc: Exception) -> None:
    clock = FakeClock()
    script = Script(clock, [ok(), exc, ok(), ok()])
    hb, abort, _ = heartbeat(clock, script)
    hb.run()
    assert abort.reason == "fence"
    assert len(script.calls) == 2  # nothing sent after the fence


def test_a_lease_lost_answered_after_stop_is_not_a_fence() -> None:
    # stop() gave up waiting for this renewal, and the job's final call ended the lease
    # meanwhile: its LEASE_LOST says nothing about the job (run 4 of issue 19 logged it as
    # an error-level fence).
    clock = FakeClock()
    script = Script(clock, [ok(), ConvexLeaseLost("gone")])  # stop() lands during the last
    hb, abort, _ = heartbeat(clock, script)
    hb.run()
    assert abort.reason is None
    assert not hb.state.fenced


def test_one_failure_is_retried_sooner_and_recovers() -> None:
    clock = FakeClock()
    script = Script(clock, [ok(), ConvexUnavailable("blip"), ok(), ok()])
    hb, abort, _ = heartbeat(clock, script, lease=3.0, every=1.0)
    hb.run()
    times = [round(t - 1000, 3) for t, _, _ in script.calls]
    assert times == [1.0, 2.0, 2.25, 3.25]
    assert abort.reason is None
    assert hb.state.failures == 0


def test_unreachable_convex_fences_before_the_lease_ends() -> None:
    clock = FakeClock()
    down = [ConvexUnavailable("down")] * 20
    script = Script(clock, [ok(), *down], call_s=0.0)
    hb, abort, _ = heartbeat(clock, script, lease=3.0, every=1.0, call_timeout=1.0)
    hb.run()
    assert abort.reason == "fence"
    # Last renewal sent at t=1: the lease ends at t=4; the fence comes with time to spare.
    fenced_at = script.calls[-1][0] - 1000
    assert fenced_at + fence_margin(3.0) <= 4.0
    assert hb.state.fenced


def test_slow_failing_calls_count_against_the_lease() -> None:
    clock = FakeClock()
    script = Script(clock, [ConvexUnavailable("timeout")] * 10, call_s=1.0)
    hb, abort, _ = heartbeat(clock, script, lease=3.0, every=1.0, call_timeout=1.0)
    hb.run()
    assert abort.reason == "fence"
    assert clock.monotonic() - 1000 < 3.0


def test_production_defaults_fence_with_margin() -> None:
    clock = FakeClock()
    script = Script(clock, [ConvexUnavailable("down")] * 100, call_s=10.0)
    hb, abort, _ = heartbeat(clock, script, lease=90.0, every=20.0, call_timeout=10.0)
    hb.run()
    assert abort.reason == "fence"
    assert clock.monotonic() - 1000 <= 90.0 - fence_margin(90.0)


def test_stop_ends_the_thread() -> None:
    clock = _RealWait()
    script = Script(clock, [])
    hb, abort, _ = heartbeat(clock, script)
    hb.start()
    hb.stop()
    assert abort.reason is None


class _RealWait(FakeClock):
    def wait(self, event: threading.Event, timeout: float) -> bool:
        return event.wait(timeout)


def test_the_lease_file_carries_the_deadline_on_the_system_clock(tmp_path: Any) -> None:
    import time

    from fondation_worker.lease import LeaseFile
    from fondation_worker.watchdog import expired, read_deadline

    clock = FakeClock(start=5_000.0)  # the worker's clock need not be the system's
    lease = LeaseFile(clock, deadline=5_090.0)  # 90 s left on the worker's clock
    path = tmp_path / "lease-deadline"
    lease.attach(path)
    written = read_deadline(str(path))
    assert written is not None
    assert written - time.monotonic() == pytest.approx(90.0, abs=1.0)
    assert not expired(written, time.monotonic())
    lease.update(clock.monotonic() + 10)  # a renewal
    assert read_deadline(str(path)) == pytest.approx(time.monotonic() + 10, abs=1.0)
    lease.update(0.0)  # fenced
    assert expired(read_deadline(str(path)), time.monotonic())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["lease-deadline"]  # no temp left
