"""ClaimTiming on its own: events in, "due now?" and "next event at" out, no threads."""

from __future__ import annotations

import math

import pytest

from fondation_worker.claim_timing import OFFER_SETTLE_S, ClaimTiming, accept_ms
from fondation_worker.models import SlotView
from fondation_worker.wakeup import WakeState


def timing() -> ClaimTiming:
    return ClaimTiming(
        poll_interval_ms=5_000, idle_poll_max_ms=32_000, safety_poll_ms=360_000, rand=lambda: 0.5
    )


def live(version: int, *views: tuple[int, str, str | None]) -> WakeState:
    slots = tuple(SlotView(slot=s, state=st, jobId=j) for s, st, j in views)  # type: ignore[arg-type]
    return WakeState(True, slots, version, None, None)


def down(version: int) -> WakeState:
    return WakeState(False, None, version, "cut", 0.0)


def test_polling_backs_off_while_empty_and_keeps_pace_while_work_is_found() -> None:
    t = timing()
    assert t.due(0.0, [0])  # the first poll at once
    t.empty(0.0, [0])
    assert t.next_event_at(0.0, [0]) == pytest.approx(5 * 0.975)
    t.empty(5.0, [0])
    assert t.next_event_at(5.0, [0]) == pytest.approx(5.0 + 10 * 0.975)
    t.claimed(20.0, 0, "j1")
    assert t.next_event_at(20.0, [0]) == 25.0
    assert not t.due(24.9, [0])
    assert t.due(25.0, [0])


def test_no_free_slot_no_claim() -> None:
    t = timing()
    assert not t.due(0.0, [])
    assert t.next_event_at(0.0, []) == math.inf


def test_subscribed_an_assignment_is_due_at_once_and_only_safety_polls_otherwise() -> None:
    t = timing()
    t.empty(0.0, [0])
    t.wake_changed(live(1, (0, "idle", None)), 1.0)
    assert not t.due(2.0, [0])
    assert t.next_event_at(2.0, [0]) == pytest.approx(1.0 + 360 * 0.95)
    t.wake_changed(live(2, (0, "assigned", "j1")), 50.0)
    assert t.due(50.0, [0])
    assert t.order([0]) == [0]


def test_assignments_come_first_in_the_claim_order() -> None:
    t = timing()
    t.wake_changed(live(1, (0, "idle", None), (1, "idle", None), (2, "assigned", "j")), 0.0)
    assert t.order([0, 1, 2]) == [2, 0, 1]
    # a busy slot's stale view is not ours to claim for
    assert t.order([0, 1]) == [0, 1]


def test_the_job_a_slot_ran_is_no_new_assignment_when_the_slot_frees() -> None:
    t = timing()
    t.wake_changed(live(1, (0, "assigned", "j1")), 0.0)
    assert t.due(0.0, [0])
    t.claimed(0.0, 0, "j1")
    # the job ended; the final call's offer is on its way, the view still names j1
    t.slot_freed(30.0, 0, offered=True)
    assert not t.due(30.0, [0])
    # ...unless the offer never shows: then the slot is offered again
    assert t.due(30.0 + OFFER_SETTLE_S, [0])
    t.wake_changed(live(2, (0, "assigned", "j2")), 31.0)  # and this one is new
    assert t.due(31.0, [0])
    # a final call that could not offer: the stale row is offered again at once
    t2 = timing()
    t2.wake_changed(live(1, (0, "assigned", "j1")), 0.0)
    t2.claimed(0.0, 0, "j1")
    t2.slot_freed(9.0, 0, offered=False)
    assert t2.due(9.0, [0])


def test_the_same_job_assigned_again_after_the_slot_was_offered_is_accepted() -> None:
    # A fenced job: the slot frees without an offer, is offered by a claim, and the
    # dispatcher gives the reclaimed job back to the same slot.
    t = timing()
    t.wake_changed(live(1, (0, "assigned", "j1")), 0.0)
    t.claimed(0.0, 0, "j1")
    t.slot_freed(5.0, 0, offered=False)
    assert t.why(5.0, [0]) == "offer"
    t.empty(5.0, [0])
    t.wake_changed(live(2, (0, "assigned", "j1")), 9.0)
    assert t.due(9.0, [0])
    assert t.why(9.0, [0]) == "assignment"
    # the same through the subscription alone: the slot shown idle, then j1 again
    t2 = timing()
    t2.wake_changed(live(1, (0, "assigned", "j1")), 0.0)
    t2.claimed(0.0, 0, "j1")
    t2.slot_freed(5.0, 0, offered=True)
    t2.wake_changed(live(2, (0, "idle", None)), 5.1)
    t2.wake_changed(live(3, (0, "assigned", "j1")), 9.0)
    assert t2.why(9.0, [0]) == "assignment"


def test_a_stale_assignment_view_is_acted_on_once() -> None:
    t = timing()
    t.wake_changed(live(3, (0, "assigned", "gone")), 10.0)
    assert t.due(10.0, [0])
    t.empty(10.0, [0])  # the job was gone: nothing accepted
    assert not t.due(10.5, [0])
    t.wake_changed(live(4, (0, "assigned", "next")), 11.0)  # news: act on it
    assert t.due(11.0, [0])


def test_a_missing_slot_is_offered_again_once_our_offer_had_time_to_show() -> None:
    t = timing()
    t.slot_freed(100.0, 0, offered=True)  # the final call offered it
    t.wake_changed(live(1), 100.1)  # the answer from before the offer: slot 0 not shown
    assert not t.due(100.2, [0])
    assert t.next_event_at(100.2, [0]) == pytest.approx(100.0 + OFFER_SETTLE_S)
    assert t.due(100.0 + OFFER_SETTLE_S, [0])
    # the final call could not offer it: offered at once
    t2 = timing()
    t2.wake_changed(live(1), 0.0)
    t2.slot_freed(7.0, 0, offered=False)
    assert t2.due(7.0, [0])


def test_failures_are_retried_within_seconds_then_every_ten_at_most() -> None:
    t = timing()
    t.wake_changed(live(1, (0, "assigned", "j")), 0.0)
    waits = []
    now = 0.0
    for _ in range(6):
        t.failed(now)
        nxt = t.next_event_at(now, [0])
        waits.append(nxt - now)
        assert not t.due(nxt - 0.01, [0])  # not even for the pushed assignment
        assert t.due(nxt, [0])
        now = nxt
    assert waits == pytest.approx([0.75, 1.5, 3.0, 6.0, 7.5, 7.5])
    t.claimed(now, 0, "j")
    assert t.retry_at is None


def test_the_subscription_going_down_brings_polling_back_within_a_poll_interval() -> None:
    t = timing()
    t.wake_changed(live(1, (0, "idle", None)), 0.0)
    t.empty(0.0, [0])
    assert t.next_event_at(0.0, [0]) > 300
    t.wake_changed(down(2), 100.0)
    assert t.next_event_at(100.0, [0]) == 105.0


def test_a_resume_offers_at_once_and_a_withdrawal_forgets_the_offers() -> None:
    t = timing()
    t.wake_changed(live(1, (0, "idle", None)), 0.0)
    t.empty(0.0, [0])
    t.withdrawn()
    t.resumed(60.0)
    assert t.due(60.0, [0])


@pytest.mark.parametrize(
    ("idle_max", "timeout", "lease", "expected"),
    [
        (32_000, 10_000, 90_000, 52_000),  # the defaults: a poll at the back-off's ceiling
        (1_000, 1_000, 90_000, 30_000),  # never below 30 s
        (600_000, 10_000, 90_000, 90_000),  # never past the lease
        (32_000, 10_000, 2_000, 5_000),  # Convex's floor
    ],
)
def test_accept_ms(idle_max: int, timeout: int, lease: int, expected: int) -> None:
    assert accept_ms(idle_max, timeout, lease) == expected
