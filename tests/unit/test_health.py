from __future__ import annotations

import httpx
import pytest

from fondation_worker import __version__
from fondation_worker.health import STARTUP_CHECK_REASON, HealthServer, HealthState
from fondation_worker.metrics import Metrics
from tests.support.fakeclock import FakeClock


@pytest.fixture
def served() -> tuple[HealthState, FakeClock, Metrics, str]:
    clock = FakeClock()
    metrics = Metrics()
    state = HealthState(clock, metrics, stale_after_s=30)
    server = HealthServer("127.0.0.1", 0, state, metrics)
    server.start()
    host, port = server.address
    yield state, clock, metrics, f"http://{host}:{port}"  # type: ignore[misc]
    server.stop()


def test_healthz_follows_the_loop_tick(served: tuple[HealthState, FakeClock, Metrics, str]) -> None:
    state, clock, _, base = served
    assert httpx.get(f"{base}/healthz").status_code == 503  # no tick yet
    state.tick()
    reply = httpx.get(f"{base}/healthz")
    assert reply.status_code == 200
    assert reply.json()["status"] == "ok"
    clock.advance(31)
    reply = httpx.get(f"{base}/healthz")
    assert reply.status_code == 503
    assert reply.json()["status"] == "stale"


def test_readyz_lists_reasons(served: tuple[HealthState, FakeClock, Metrics, str]) -> None:
    state, _, metrics, base = served
    state.tick()
    reply = httpx.get(f"{base}/readyz")
    assert reply.status_code == 200
    assert reply.json() == {
        "ready": True,
        "starting": False,
        "reasons": [],
        "degraded": [],
        "checks": {
            "convex": True,
            "claude": True,
            "disk": True,
            "loop": True,
            "draining": False,
            "wakeup": True,
        },
        "layers": {},
        "version": __version__,
        "claude_cli_version": None,  # outside the image nothing names it
        "worker_id": None,
        "current_job": None,
        "current_jobs": [],
    }
    assert metrics.registry.get_sample_value("fondation_worker_ready") == 1
    state.set_problem("claude", "Claude authentication failed")
    state.set_problem("disk", "12 MiB free")
    body = httpx.get(f"{base}/readyz").json()
    assert body["ready"] is False
    assert body["reasons"] == ["claude: Claude authentication failed", "disk: 12 MiB free"]
    assert body["checks"]["claude"] is False
    assert body["checks"]["convex"] is True
    assert metrics.registry.get_sample_value("fondation_worker_ready") == 0
    state.clear_problem("claude")
    state.clear_problem("disk")
    state.set_draining()
    body = httpx.get(f"{base}/readyz").json()
    assert body["ready"] is False
    assert body["reasons"] == ["draining: the worker is shutting down"]


def test_a_notice_is_reported_but_leaves_the_worker_ready(
    served: tuple[HealthState, FakeClock, Metrics, str],
) -> None:
    state, _, metrics, base = served
    state.tick()
    state.set_notice("wakeup", "subscription down (timeout); polling over HTTP")
    reply = httpx.get(f"{base}/readyz")
    assert reply.status_code == 200
    body = reply.json()
    assert body["ready"] is True
    assert body["degraded"] == ["wakeup: subscription down (timeout); polling over HTTP"]
    assert body["checks"]["wakeup"] is False
    assert metrics.registry.get_sample_value("fondation_worker_ready") == 1
    assert state.clear_notice("wakeup") is True
    assert httpx.get(f"{base}/readyz").json()["degraded"] == []


def test_readyz_tells_a_replica_still_starting_from_a_stuck_one(
    served: tuple[HealthState, FakeClock, Metrics, str],
) -> None:
    state, _, _, base = served
    body = httpx.get(f"{base}/readyz").json()  # no loop tick yet
    assert (body["ready"], body["starting"]) == (False, True)
    state.tick()
    state.set_problem("claude", STARTUP_CHECK_REASON)
    body = httpx.get(f"{base}/readyz").json()
    assert (body["ready"], body["starting"]) == (False, True)
    assert body["reasons"] == [f"claude: {STARTUP_CHECK_REASON}"]
    # The check answered: a failed login is not "starting" any more.
    state.set_problem("claude", "Claude authentication failed: Not logged in")
    body = httpx.get(f"{base}/readyz").json()
    assert (body["ready"], body["starting"]) == (False, False)
    state.clear_problem("claude")
    body = httpx.get(f"{base}/readyz").json()
    assert (body["ready"], body["starting"]) == (True, False)


def test_metrics_and_404(served: tuple[HealthState, FakeClock, Metrics, str]) -> None:
    _, _, metrics, base = served
    metrics.jobs_claimed.inc()
    metrics.jobs_finished.labels(outcome="completed").inc()
    metrics.job_duration.labels(outcome="completed").observe(42)
    metrics.convex_calls.labels(function="jobs:claimOne", outcome="ok").inc()
    metrics.lease_renew_failures.inc()
    metrics.in_flight.set(1)
    text = httpx.get(f"{base}/metrics").text
    for name in (
        "fondation_worker_jobs_claimed_total 1.0",
        'fondation_worker_jobs_finished_total{outcome="completed"} 1.0',
        "fondation_worker_job_duration_seconds_bucket",
        'fondation_worker_convex_calls_total{function="jobs:claimOne",outcome="ok"} 1.0',
        "fondation_worker_lease_renew_failures_total 1.0",
        "fondation_worker_jobs_in_flight 1.0",
    ):
        assert name in text
    assert httpx.get(f"{base}/nope").status_code == 404


def test_both_bodies_say_which_version_runs_which_jobs() -> None:
    clock = FakeClock()
    metrics = Metrics()
    state = HealthState(
        clock, metrics, stale_after_s=30, worker_id="host-a-1", claude_cli_version="2.9.9"
    )
    server = HealthServer("127.0.0.1", 0, state, metrics)
    server.start()
    host, port = server.address
    base = f"http://{host}:{port}"
    try:
        starting = httpx.get(f"{base}/healthz")
        assert starting.status_code == 503
        assert starting.json() == {
            "status": "starting",
            "version": __version__,
            "claude_cli_version": "2.9.9",
            "worker_id": "host-a-1",
            "current_job": None,
            "current_jobs": [],
        }
        state.tick()
        state.job_started("job-b")
        state.job_started("job-a")
        for path in ("/healthz", "/readyz"):
            reply = httpx.get(f"{base}{path}")
            assert reply.status_code == 200
            body = reply.json()
            assert body["version"] == __version__
            assert body["claude_cli_version"] == "2.9.9"
            assert body["worker_id"] == "host-a-1"
            assert body["current_job"] == "job-b"  # the oldest
            assert body["current_jobs"] == ["job-b", "job-a"]
        assert httpx.get(f"{base}/healthz").json()["status"] == "ok"  # fields kept
        state.job_finished("job-b")
        assert httpx.get(f"{base}/readyz").json()["current_job"] == "job-a"
        state.job_finished("job-a")
        state.job_finished("job-a")  # twice is harmless
        body = httpx.get(f"{base}/readyz").json()
        assert body["current_job"] is None
        assert body["current_jobs"] == []
        assert body["ready"] is True
    finally:
        server.stop()


def test_readyz_names_the_defence_layers() -> None:
    layers = {"cli": "on", "landlock": "on (ABI 7)", "documents": "on"}
    state = HealthState(FakeClock(), Metrics(), layers=layers)
    state.tick()
    assert state.readiness()[1]["layers"] == layers
