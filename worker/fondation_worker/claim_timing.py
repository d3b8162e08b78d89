"""When the worker calls ``jobs:claimOne``: one object, no threads, no clock of its own.

The dispatcher (convex/dispatch.ts) hands each due job to one idle slot; a worker offers
its free slots and accepts what is assigned to them. ``claimOne`` does both: it accepts an
assignment on one of the slots it names, or offers them. This object decides when that call
is due, from what the scheduler tells it (the subscription's view of our slots, each claim's
result, a slot freed, a pause ended) and the time the scheduler passes in (monotonic
seconds). Nothing here compares a wall clock with a job's due time: that is the
dispatcher's business, on Convex's clock.

- Subscribed (the assignments subscription is live): claim when it shows a job assigned to
  one of our free slots, or one of our free slots missing (the final call that should have
  offered it failed, or an assignment we could not take in time was taken back), and as a
  safety poll once it has said nothing for SAFETY_POLL_MS.
- Not subscribed: poll at POLL_INTERVAL_MS while work is found, backing off to
  IDLE_POLL_MAX_MS while none is: each poll offers the free slots and accepts what is
  assigned to them.
- A claim call that failed is retried within seconds (1, 2, 4, 8 s, then every 10 s) with
  the same request id, never left for the next poll: an assignment waits for acceptance
  only ACCEPT_MS.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

from .backoff import idle_poll_delay_ms, retry_delay_s
from .units import seconds
from .wakeup import WakeState

# Safety polls while subscribed are shortened by up to this fraction, so a fleet spreads out.
SAFETY_JITTER = 0.1
# A failed claim call is retried after 1, 2, 4, 8 s, then every 10 s (jittered).
CLAIM_RETRY_BASE_S = 1.0
CLAIM_RETRY_MAX_S = 10.0
# An offer (a claim's, or a final call's) shows in the subscription's next answer, within a
# second normally; a free slot still missing from it this long after our last offer is
# offered again (a claim then, racing the dispatcher, would be wasted most of the time).
OFFER_SETTLE_S = 10.0
# How long an assignment may wait for this worker to accept it: covers a poll at the idle
# back-off's ceiling while the subscription is down, bounded by the lease (what a dead
# worker's job already waits for today) and Convex's bounds (MIN/MAX_ACCEPT_MS).
MIN_ACCEPT_MS = 30_000
MAX_ACCEPT_MS = 600_000


def accept_ms(idle_poll_max_ms: int, convex_timeout_ms: int, lease_ms: int) -> int:
    """The acceptMs this worker asks for its slots."""
    wanted = max(MIN_ACCEPT_MS, idle_poll_max_ms + 2 * convex_timeout_ms)
    return max(5_000, min(wanted, lease_ms, MAX_ACCEPT_MS))


@dataclass
class ClaimTiming:
    """The claim call's timing. The scheduler reports events and asks ``due`` and
    ``next_event_at``; all times are the scheduler's monotonic seconds."""

    poll_interval_ms: int
    idle_poll_max_ms: int
    safety_poll_ms: int
    rand: Callable[[], float]

    wake: WakeState | None = None
    next_poll: float = 0.0
    empty_polls: int = 0
    failures: int = 0
    retry_at: float | None = None
    offered_at: dict[int, float] = field(default_factory=dict)
    # The answer a claim already acted on and found nothing for (a stale view): not again.
    spent_version: int | None = None
    # The job each slot last accepted: its row keeps naming it until the slot is offered
    # again, and that is no new assignment. Forgotten once the slot is seen offered: the
    # same job assigned again later (its lease reclaimed) is a new assignment to accept.
    taken: dict[int, str] = field(default_factory=dict)

    # --- what the scheduler tells it --------------------------------------------------

    def wake_changed(self, state: WakeState, now: float) -> None:
        """The subscription has a new answer or state."""
        was_live = self.subscribed
        self.wake = state
        for view in state.slots or ():
            if view.job_id != self.taken.get(view.slot):
                self.taken.pop(view.slot, None)
        if state.live:
            # The answer covers us (a missing slot is offered by itself): the safety poll is
            # for a subscription silent that long, so each answer puts it off again.
            self.next_poll = max(self.next_poll if was_live else now, now + self._safety_delay())
        elif was_live and not state.live:
            # Back to polling, from its first step (a poll within POLL_INTERVAL_MS).
            self.empty_polls = 0
            self.next_poll = min(self.next_poll, now + seconds(self.poll_interval_ms))

    def claimed(self, now: float, slot: int, job_id: str) -> None:
        """A claim call came back with a job, to run in ``slot``."""
        self._answered()
        self.taken[slot] = job_id
        self.empty_polls = 0
        self.next_poll = now + (
            self._safety_delay() if self.subscribed else seconds(self.poll_interval_ms)
        )

    def empty(self, now: float, offered: Iterable[int]) -> None:
        """A claim call came back empty: the slots it named are offered now."""
        self._answered()
        if self.wake is not None:
            self.spent_version = self.wake.version
        for slot in offered:
            self.offered_at[slot] = now
            self.taken.pop(slot, None)
        self.empty_polls += 1
        if self.subscribed:
            delay_s = self._safety_delay()
        else:
            delay_s = seconds(
                idle_poll_delay_ms(
                    self.empty_polls, self.poll_interval_ms, self.idle_poll_max_ms, self.rand()
                )
            )
        self.next_poll = now + delay_s

    def failed(self, now: float) -> None:
        """A claim call failed (no answer, or Convex refused it): retry within seconds."""
        self.failures += 1
        self.retry_at = now + retry_delay_s(
            self.failures, CLAIM_RETRY_BASE_S, CLAIM_RETRY_MAX_S, self.rand()
        )

    def slot_freed(self, now: float, slot: int, offered: bool) -> None:
        """A job ended; its final call offered the slot (``offered``) or could not."""
        if offered:
            self.offered_at[slot] = now
        else:
            self.offered_at.pop(slot, None)
            if not self.subscribed:
                self.next_poll = min(self.next_poll, now)

    def withdrawn(self) -> None:
        """The slots were taken out of dispatch (a pause or a drain)."""
        self.offered_at.clear()

    def resumed(self, now: float) -> None:
        """A pause ended: offer the slots again now."""
        self.offered_at.clear()
        self.empty_polls = 0
        self.next_poll = now

    # --- what the scheduler asks ------------------------------------------------------

    @property
    def subscribed(self) -> bool:
        return self.wake is not None and self.wake.live

    def order(self, free: Sequence[int]) -> list[int]:
        """The free slots for a claim call, those with an assignment first."""
        assigned = self._assigned(free)
        return [s for s in free if s in assigned] + [s for s in free if s not in assigned]

    def due(self, now: float, free: Sequence[int]) -> bool:
        """Whether a claim call is due now for these free slots."""
        if not free:
            return False
        if self.retry_at is not None:
            return now >= self.retry_at
        if self.subscribed and (self._assigned(free) or self._missing_since(free, now) <= now):
            return True
        return now >= self.next_poll

    def why(self, now: float, free: Sequence[int]) -> str:
        """Why a claim is due now (for the logs): assignment, offer, retry or poll."""
        if self.retry_at is not None:
            return "retry"
        if self.subscribed and self._assigned(free):
            return "assignment"
        if self.subscribed and self._missing_since(free, now) <= now:
            return "offer"
        return "poll"

    def next_event_at(self, now: float, free: Sequence[int]) -> float:
        """When ``due`` may turn true without news from outside (inf: never)."""
        if not free:
            return math.inf
        if self.retry_at is not None:
            return self.retry_at
        events = [self.next_poll]
        if self.subscribed:
            events.append(self._missing_since(free, now))
        return min(events)

    # --- internals --------------------------------------------------------------------

    def _answered(self) -> None:
        self.failures = 0
        self.retry_at = None

    def _safety_delay(self) -> float:
        return seconds(self.safety_poll_ms * (1.0 - SAFETY_JITTER * self.rand()))

    def _assigned(self, free: Sequence[int]) -> set[int]:
        if self.wake is None or self.wake.slots is None or self.wake.version == self.spent_version:
            return set()
        return {
            v.slot
            for v in self.wake.slots
            if v.state == "assigned" and v.slot in free and v.job_id != self.taken.get(v.slot)
        }

    def _missing_since(self, free: Sequence[int], now: float) -> float:
        """When a free slot the subscription does not show as offered (no row, or its row
        still naming the job that ran in it) is to be offered again (inf: none)."""
        if self.wake is None or self.wake.slots is None:
            return math.inf
        shown = {v.slot: v for v in self.wake.slots}
        missing = [
            s
            for s in free
            if (view := shown.get(s)) is None
            or (view.state == "assigned" and view.job_id == self.taken.get(s))
        ]
        if not missing:
            return math.inf
        return min(self.offered_at.get(s, -math.inf) + OFFER_SETTLE_S for s in missing)
