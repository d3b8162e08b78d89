"""The scheduler's wake path with a fake clock and a fake dispatcher.

The clock plays a script: when the loop waits past a scripted moment, time stops there, the
scripted change happens (a job assigned to the worker's slot, the subscription going down)
and the loop wakes, as the real subscription thread wakes it. The fake dispatcher answers
claims as Convex's does: a claim offers the slots it names (the subscription then shows them
idle) or accepts the job assigned to one. Every figure is in fake time, exact.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from itertools import pairwise
from typing import Any

import pytest

from fondation_worker.claim_timing import OFFER_SETTLE_S
from fondation_worker.errors import ConvexUnavailable
from fondation_worker.health import HealthState
from fondation_worker.models import SlotView
from fondation_worker.scheduler import Scheduler
from fondation_worker.wakeup import WakeState
from tests.support.fakeclock import FakeClock
from tests.unit.test_scheduler import FakeQueue, FakeRunner, claimed, make

HOUR = 3600.0


class ScriptedClock(FakeClock):
    def __init__(self) -> None:
        super().__init__()
        self.script: list[tuple[float, Callable[[], None]]] = []
        self.wall_offset = 0.0  # a worker whose wall clock is off

    def time(self) -> float:
        return super().time() + self.wall_offset

    def at(self, t: float, fn: Callable[[], None]) -> None:
        self.script.append((t, fn))
        self.script.sort(key=lambda e: e[0])

    def wait(self, event: threading.Event, timeout: float) -> bool:
        if event.is_set():
            return True
        end = self.t + max(0.0, timeout)
        if self.script and self.script[0][0] <= end:
            t, fn = self.script.pop(0)
            self.t = max(self.t, t)
            fn()
            return event.is_set()
        self.t = end
        return event.is_set()


class FakeDispatch(FakeQueue):
    """The worker's side of Convex's dispatch: its slot rows, pushed through a fake
    subscription whenever they change (unless the subscription is down)."""

    def __init__(self, clock: ScriptedClock) -> None:
        super().__init__(clock=clock)
        self.rows: dict[int, str | None] = {}  # slot -> assigned job id (None: idle)
        self.live = False
        self.version = 0
        self.down_reason: str | None = "not connected yet"
        self.on_change: Callable[[], None] | None = None
        self.stopped = False
        self.fail_next = 0

    # --- the subscription (WakeSource) ------------------------------------------------

    def start(self, on_change: Callable[[], None]) -> None:
        self.on_change = on_change

    def stop(self) -> None:
        self.stopped = True

    def state(self) -> WakeState:
        slots = tuple(
            SlotView(slot=s, state="idle" if j is None else "assigned", jobId=j)
            for s, j in sorted(self.rows.items())
        )
        return WakeState(
            self.live, slots if self.live else None, self.version, self.down_reason, None
        )

    def _push(self) -> None:
        self.version += 1
        if self.on_change is not None:
            self.on_change()

    def connect(self) -> None:
        self.live, self.down_reason = True, None
        self._push()

    def down(self, reason: str) -> None:
        self.live, self.down_reason = False, reason
        self._push()

    def assign(self, n: int, slot: int = 0) -> None:
        """The dispatcher hands job ``n`` to our idle ``slot``."""
        assert self.rows.get(slot, "missing") is None, "only an idle slot is assigned"
        self.jobs.append(claimed(n))
        self.rows[slot] = f"job{n}"
        if self.live:
            self._push()

    def drop(self, slot: int) -> None:
        """The dispatcher dropped our slot row (an assignment we did not take in time)."""
        self.rows.pop(slot, None)
        self.jobs.clear()
        if self.live:
            self._push()

    # --- claimOne ------------------------------------------------------------------------

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
        self.claims.append(self.clock.monotonic())
        self.request_ids.append(request_id)
        if self.fail_next:
            self.fail_next -= 1
            raise ConvexUnavailable("jobs:claimOne: connection reset")
        changed = False
        for slot in slots:
            job_id = self.rows.get(slot, "missing")
            if job_id == "missing":
                self.rows[slot] = None
                changed = True
            elif job_id is not None and self.jobs and self.jobs[0].job_id == job_id:
                # accepted: the row keeps naming the job (Convex writes only the job)
                return self.jobs.pop(0).model_copy(update={"slot": slot})
            elif job_id is not None:
                self.rows[slot] = None  # naming a job that moved on: idle again
                changed = True
        if changed and self.live:
            self._push()
        return None


def setup(**overrides: Any) -> tuple[ScriptedClock, FakeDispatch, Scheduler, HealthState]:
    clock = ScriptedClock()
    dispatch = FakeDispatch(clock)
    values: dict[str, Any] = {"poll_interval_ms": 5000, "idle_poll_max_ms": 32000, **overrides}
    scheduler, health, _ = make(dispatch, FakeRunner(), clock, wakeup=dispatch, **values)
    clock.at(clock.monotonic() + 0.5, dispatch.connect)
    return clock, dispatch, scheduler, health


def test_an_idle_subscribed_worker_offers_its_slot_once_then_polls_12_times_an_hour() -> None:
    clock, dispatch, scheduler, health = setup()
    start = clock.monotonic()
    clock.at(start + HOUR, scheduler.request_stop)
    assert scheduler.run() == 0
    in_hour = [t for t in dispatch.claims if t - start < HOUR]
    # the start-up poll (it offers slot 0), then only the safety polls
    assert len(in_hour) <= 12
    gaps = [b - a for a, b in pairwise(dispatch.claims)]
    assert min(gaps) >= 360 * 0.9
    assert dispatch.stopped
    assert dispatch.withdrawals == ["worker draining"]
    assert health.readiness()[1]["checks"]["wakeup"] is True


def test_an_assignment_is_accepted_the_moment_it_is_pushed() -> None:
    clock, dispatch, scheduler, _ = setup()
    start = clock.monotonic()
    assigned_at = start + 1234.5
    clock.at(assigned_at, lambda: dispatch.assign(1))
    clock.at(assigned_at + 2, scheduler.request_stop)
    # The fake job runs on a real thread that fake time may outrun (then the drain gives it
    # back and run() says so): the subject here is when the claim was made.
    scheduler.run()
    before = [t for t in dispatch.claims if start < t < assigned_at]
    assert len(before) <= 1 + 1234 / (360 * 0.9)
    assert [t for t in dispatch.claims if assigned_at <= t < assigned_at + 1] == [assigned_at]


@pytest.mark.parametrize("offset_s", [-600.0, 600.0])
def test_pickup_does_not_depend_on_the_worker_wall_clock(offset_s: float) -> None:
    # Due times are the dispatcher's business, on Convex's clock: a worker 10 minutes slow
    # or fast accepts its assignment at the same moment.
    clock, dispatch, scheduler, _ = setup()
    clock.wall_offset = offset_s
    assigned_at = clock.monotonic() + 100.25
    clock.at(assigned_at, lambda: dispatch.assign(1))
    clock.at(assigned_at + 2, scheduler.request_stop)
    scheduler.run()
    assert [t for t in dispatch.claims if assigned_at <= t < assigned_at + 1] == [assigned_at]


def test_a_failed_claim_is_retried_within_seconds_with_the_same_request_id() -> None:
    clock, dispatch, scheduler, _ = setup()
    assigned_at = clock.monotonic() + 50.0

    def assign_and_cut() -> None:
        dispatch.fail_next = 2  # the claim and its first retry get no answer
        dispatch.assign(1)

    clock.at(assigned_at, assign_and_cut)
    clock.at(assigned_at + 30, scheduler.request_stop)
    scheduler.run()
    tries = [
        (t, r)
        for t, r in zip(dispatch.claims, dispatch.request_ids, strict=True)
        if t >= assigned_at
    ]
    assert len(tries) >= 3
    times = [t - assigned_at for t, _ in tries[:3]]
    # at once, then 1 s and 2 s back-offs (equal jitter at rand 0.5: 0.75 s and 1.5 s)
    assert times == pytest.approx([0.0, 0.75, 0.75 + 1.5])
    assert len({r for _, r in tries[:3]}) == 1, "every try repeats the same request id"
    assert not dispatch.jobs  # the third took the job


def test_a_slot_the_dispatcher_dropped_is_offered_again() -> None:
    clock, dispatch, scheduler, _ = setup()
    dropped_at = clock.monotonic() + 200.0
    clock.at(dropped_at, lambda: dispatch.drop(0))
    clock.at(dropped_at + 60, scheduler.request_stop)
    scheduler.run()
    again = [t for t in dispatch.claims if dropped_at <= t < dropped_at + 60]
    assert again == [dropped_at]  # our last offer was long ago: offered at once
    assert dispatch.rows == {0: None}


def test_a_stale_assignment_view_is_not_acted_on_twice() -> None:
    # The answer still shows an assignment the claim no longer finds (canceled meanwhile,
    # its push not arrived): one claim, then wait for news instead of spinning.
    clock, dispatch, scheduler, _ = setup()
    at = clock.monotonic() + 100.0

    def stale() -> None:
        dispatch.rows[0] = "job9"  # shown assigned, but no job behind it
        dispatch._push()

    clock.at(at, stale)
    clock.at(at + 600, scheduler.request_stop)
    original = dispatch.claim_one

    def claim_without_job(*args: Any, **kwargs: Any) -> Any:
        if dispatch.rows.get(0) == "job9" and not dispatch.jobs:
            dispatch.claims.append(clock.monotonic())
            dispatch.request_ids.append(args[2] if len(args) > 2 else None)
            return None  # and the row stays as the subscription last showed it
        return original(*args, **kwargs)

    dispatch.claim_one = claim_without_job  # type: ignore[method-assign]
    assert scheduler.run() == 0
    assert scheduler.iterations < 100
    woken = [t for t in dispatch.claims if at <= t < at + 600]
    assert woken[0] == at
    assert len(woken) <= 1 + 600 / (360 * 0.9)


def test_subscription_down_falls_back_to_polling_and_back() -> None:
    clock, dispatch, scheduler, health = setup()
    start = clock.monotonic()
    seen: dict[str, object] = {}
    cut = start + 1000.0
    clock.at(cut, lambda: dispatch.down("no message from Convex for 30 s"))

    def look() -> None:
        seen["readyz"] = health.readiness()[1]

    clock.at(cut + 1, look)
    assigned_at = cut + 300.0
    clock.at(assigned_at, lambda: dispatch.assign(1))  # not pushed: the socket is down
    back = cut + 600.0
    clock.at(back, dispatch.connect)
    clock.at(back + HOUR, scheduler.request_stop)
    scheduler.run()
    down = [t for t in dispatch.claims if cut <= t < back]
    # polling: 5 s, then doubling to the 32 s ceiling; each poll offers and accepts
    assert down[0] - cut <= 5.0 + 1e-6
    gaps = [b - a for a, b in pairwise(down)]
    assert max(gaps) <= 32.0
    assert len(down) >= 300 / 32
    # the assignment made while the socket was down is taken by the next poll
    taken = [t for t in down if t >= assigned_at]
    assert taken
    assert taken[0] - assigned_at <= 32.0
    readyz = seen["readyz"]
    assert isinstance(readyz, dict)
    assert readyz["ready"] is True
    assert readyz["degraded"] == [
        "wakeup: subscription down (no message from Convex for 30 s); polling over HTTP"
    ]
    up = [t for t in dispatch.claims if t >= back + OFFER_SETTLE_S]
    assert len(up) <= 12  # slow again once the answer is back
    assert health.readiness()[1]["degraded"] == []
