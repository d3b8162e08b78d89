"""The wake path end to end: a real worker subscribed to its jobs:assignments on the dev
backend.

Workers run the production timings here (POLL_INTERVAL_MS 5 s, IDLE_POLL_MAX_MS 32 s,
SAFETY_POLL_MS 6 min), so a pickup within about a second can only come from the pushed
answer, not from a poll.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.support import CLAIM_CALLS, SAMPLE_FILES, DevBackend, enqueue, wait_status, wait_until

pytestmark = pytest.mark.integration

PRODUCTION_TIMINGS = {
    "POLL_INTERVAL_MS": "5000",
    "IDLE_POLL_MAX_MS": "32000",
    "SAFETY_POLL_MS": "360000",
    "LEASE_MS": "30000",
}


def settled_and_subscribed(worker: Any) -> None:
    """Subscribed, and past the start-up poll."""
    wait_until(lambda: worker.metric("fondation_worker_wakeup_subscribed") == 1, 30)
    wait_until(lambda: worker.metric(CLAIM_CALLS) >= 1, 30)


def claimed_event(worker: Any, job_id: str) -> dict[str, Any]:
    event: dict[str, Any] = worker.wait_event(
        "job.claimed", 10, lambda e: e.get("job_id") == job_id
    )
    return event


def pickup_s(backend: DevBackend, job_id: str, worker: Any) -> float:
    claimed = claimed_event(worker, job_id)
    created = float(backend.dump("jobs")[0]["createdAt"]) / 1000
    return float(claimed["lease_until"]) / 1000 - 30.0 - created


def test_an_idle_subscribed_worker_picks_a_job_up_within_a_second(
    dev_backend: DevBackend, start_worker: Any, git_server: Any
) -> None:
    repo = git_server.add_repo("wake", "now", SAMPLE_FILES)
    worker = start_worker(dev_backend, **PRODUCTION_TIMINGS)
    settled_and_subscribed(worker)
    job_id = enqueue(dev_backend, repo)
    assert pickup_s(dev_backend, job_id, worker) < 1.0
    # The claim was the pushed assignment's, made before the next poll was due.
    assert claimed_event(worker, job_id)["via"] == "assignment"
    assert wait_status(dev_backend, job_id, {"completed", "dead"}, 60)["status"] == "completed"
    readyz = worker.get("/readyz").json()
    assert readyz["checks"]["wakeup"] is True
    assert readyz["degraded"] == []


def test_a_cut_subscription_falls_back_to_polling_and_comes_back(
    dev_backend: DevBackend, start_worker: Any, git_server: Any
) -> None:
    repo = git_server.add_repo("wake", "cut", SAMPLE_FILES)
    worker = start_worker(dev_backend, **PRODUCTION_TIMINGS)
    settled_and_subscribed(worker)
    connects = worker.metric("fondation_worker_wakeup_connects_total")
    dev_backend.pause("reset")  # every connection cut, new ones refused
    worker.wait_event("wakeup.down", 15)
    assert worker.metric("fondation_worker_wakeup_subscribed") == 0
    # Said on /readyz (the next HTTP poll, within POLL_INTERVAL_MS, also finds Convex down).
    degraded = worker.get("/readyz").json()["degraded"]
    assert any(r.startswith("wakeup: subscription down") for r in degraded)
    dev_backend.resume()
    # Reconnected with back-off (at most 30 s between attempts), then the push path again.
    wait_until(lambda: worker.metric("fondation_worker_wakeup_subscribed") == 1, 45)
    assert worker.metric("fondation_worker_wakeup_connects_total") > connects
    assert worker.metric("fondation_worker_wakeup_down_seconds_total") > 0
    wait_until(lambda: worker.get("/readyz").status_code == 200, 45)
    job_id = enqueue(dev_backend, repo)
    assert pickup_s(dev_backend, job_id, worker) < 1.0


def test_without_the_subscription_the_worker_polls_as_before(
    dev_backend: DevBackend, start_worker: Any, git_server: Any
) -> None:
    repo = git_server.add_repo("wake", "off", SAMPLE_FILES)
    worker = start_worker(
        dev_backend, WAKEUP="false", POLL_INTERVAL_MS="200", IDLE_POLL_MAX_MS="500"
    )
    job_id = enqueue(dev_backend, repo)
    assert wait_status(dev_backend, job_id, {"completed", "dead"}, 60)["status"] == "completed"
    assert worker.metric("fondation_worker_wakeup_connects_total") == 0
    assert worker.get("/readyz").json()["degraded"] == []


def test_a_claim_whose_replies_are_lost_is_retried_within_seconds_and_runs_once(
    dev_backend: DevBackend, start_worker: Any, git_server: Any
) -> None:
    # Both the claim and the client's own retry are applied and their replies lost; before,
    # the next claim came at the safety poll (minutes), after the lease had run out, and with
    # maxAttempts 1 the reclaim made the job dead unrun.
    repo = git_server.add_repo("wake", "lost", SAMPLE_FILES)
    worker = start_worker(dev_backend, **PRODUCTION_TIMINGS)
    settled_and_subscribed(worker)
    dev_backend.lose_replies("jobs:claimOne", 2)
    job_id = enqueue(dev_backend, repo, max_attempts=1)
    claimed = claimed_event(worker, job_id)
    assert claimed["via"] == "retry"
    assert pickup_s(dev_backend, job_id, worker) < 5.0
    job = wait_status(dev_backend, job_id, {"completed", "dead"}, 60)
    assert job["status"] == "completed"
    assert job["attempts"] == 1
    assert dev_backend.stats()["functions"]["jobs:claimOne"]["conflicts"] == 0
