"""The scheduler's wake path with a fake clock and a fake subscription.

The clock plays a script: when the loop waits past a scripted moment, time stops there, the
scripted change happens (a pushed answer, the subscription going down) and the loop wakes,
as the real subscription thread wakes it. Every figure is in fake time, exact.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from itertools import pairwise

import pytest

from fondation_worker.health import HealthState
from fondation_worker.scheduler import Scheduler
from fondation_worker.wakeup import WakeState
from tests.support.fakeclock import FakeClock
from tests.unit.test_scheduler import FakeQueue, FakeRunner, claimed, make

HOUR = 3600.0


class ScriptedClock(FakeClock):
    def __init__(self) -> None:
        super().__init__()
        self.script: list[tuple[float, Callable[[], None]]] = []

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


class FakeWake:
    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock
        self._state = WakeState(False, None, 0, "not connected yet", None)
        self.on_change: Callable[[], None] | None = None
        self.stopped = False

    def start(self, on_change: Callable[[], None]) -> None:
        self.on_change = on_change

    def stop(self) -> None:
        self.stopped = True

    def state(self) -> WakeState:
        return self._state

    def push(self, due_in_s: float | None) -> None:
        """The subscription's answer: a job due ``due_in_s`` from now (None: queue empty)."""
        due = None if due_in_s is None else (self.clock.time() + due_in_s) * 1000
        self._state = WakeState(True, due, self._state.version + 1, None, None)
        assert self.on_change is not None
        self.on_change()

    def down(self, reason: str) -> None:
        self._state = WakeState(False, None, self._state.version + 1, reason, self.clock.time())
        assert self.on_change is not None
        self.on_change()


def setup() -> tuple[ScriptedClock, FakeQueue, FakeWake, tuple[Scheduler, HealthState]]:
    clock = ScriptedClock()
    queue = FakeQueue(clock=clock)
    wake = FakeWake(clock)
    scheduler, health, _ = make(
        queue, FakeRunner(), clock, wakeup=wake, poll_interval_ms=5000, idle_poll_max_ms=32000
    )
    return clock, queue, wake, (scheduler, health)


def test_idle_subscribed_worker_polls_at_most_12_times_an_hour() -> None:
    clock, queue, wake, (scheduler, health) = setup()
    start = clock.monotonic()
    clock.at(start + 0.5, lambda: wake.push(None))
    clock.at(start + HOUR, scheduler.request_stop)
    assert scheduler.run() == 0
    in_hour = [t for t in queue.claims if t - start < HOUR]
    # the start-up poll, the back-off's first step before the answer, then the safety polls
    assert len(in_hour) <= 12
    gaps = [b - a for a, b in zip(queue.claims[1:], queue.claims[2:], strict=False)]
    assert min(gaps) >= 360 * 0.9
    assert wake.stopped
    assert health.readiness()[1]["checks"]["wakeup"] is True


def test_a_pushed_job_is_claimed_at_once() -> None:
    clock, queue, wake, (scheduler, _) = setup()
    start = clock.monotonic()
    clock.at(start + 0.5, lambda: wake.push(None))
    pushed_at = start + 1234.5

    def enqueue() -> None:
        queue.jobs.append(claimed(1))
        wake.push(0.0)

    clock.at(pushed_at, enqueue)
    clock.at(pushed_at + 1, lambda: wake.push(None))  # the claim took it: the queue is empty
    clock.at(pushed_at + 2, scheduler.request_stop)
    # The fake job runs on a real thread that fake time may outrun (then the drain gives it
    # back and run() says so): the subject here is when the claim was made.
    scheduler.run()
    before = [t for t in queue.claims if start + 0.5 < t < pushed_at]
    # one poll on the back-off's first step before the answer, then safety polls only
    assert len(before) <= 1 + 1234 / (360 * 0.9)
    # claimed the moment the answer arrived
    assert any(pushed_at <= t < pushed_at + 1e-6 for t in queue.claims)


def test_a_job_due_later_is_claimed_when_due_and_not_before() -> None:
    clock, queue, wake, (scheduler, _) = setup()
    start = clock.monotonic()
    clock.at(start + 0.5, lambda: wake.push(None))
    told = start + 100.0

    def schedule() -> None:
        queue.jobs.append(claimed(1))
        wake.push(42.25)  # a retry due in 42.25 s

    clock.at(told, schedule)
    clock.at(told + 43, scheduler.request_stop)
    scheduler.run()  # the subject is when the claim was made (see above)
    between = [t for t in queue.claims if told <= t < told + 42.25]
    assert between == []
    assert any(told + 42.25 <= t < told + 42.25 + 1e-6 for t in queue.claims)


def test_subscription_down_falls_back_to_polling_and_back() -> None:
    clock, queue, wake, (scheduler, health) = setup()
    start = clock.monotonic()
    seen: dict[str, object] = {}
    clock.at(start + 0.5, lambda: wake.push(None))
    cut = start + 1000.0
    clock.at(cut, lambda: wake.down("no message from Convex for 30 s"))

    def look() -> None:
        seen["readyz"] = health.readiness()[1]

    clock.at(cut + 1, look)
    back = cut + 600.0
    clock.at(back, lambda: wake.push(None))
    clock.at(back + HOUR, scheduler.request_stop)
    assert scheduler.run() == 0
    down = [t for t in queue.claims if cut <= t < back]
    # today's polling: 5 s, then doubling to the 32 s ceiling
    assert down[0] - cut <= 5.0 + 1e-6
    gaps = [b - a for a, b in pairwise(down)]
    assert max(gaps) <= 32.0
    assert len(down) >= 600 / 32
    readyz = seen["readyz"]
    assert isinstance(readyz, dict)
    assert readyz["ready"] is True
    assert readyz["degraded"] == [
        "wakeup: subscription down (no message from Convex for 30 s); polling over HTTP"
    ]
    up = [t for t in queue.claims if t >= back]
    assert len(up) <= 12  # slow again once the answer is back
    assert health.readiness()[1]["degraded"] == []


def test_a_due_answer_with_nothing_to_claim_backs_off_instead_of_spinning() -> None:
    # Another worker won the race, or our clock runs ahead of Convex's: the answer stays
    # "due" and every claim finds nothing.
    clock, queue, wake, (scheduler, _) = setup()
    start = clock.monotonic()
    clock.at(start + 0.5, lambda: wake.push(0.0))
    clock.at(start + 600, scheduler.request_stop)
    assert scheduler.run() == 0
    assert scheduler.iterations < 200
    woken = [t for t in queue.claims if t >= start + 0.5]
    gaps = [b - a for a, b in pairwise(woken)]
    assert gaps[:3] == pytest.approx([5.0 * 0.975, 10 * 0.975, 20 * 0.975])
    assert len(woken) <= 3 + 600 / (32 * 0.975) + 1
