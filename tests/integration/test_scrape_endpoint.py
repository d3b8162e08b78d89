"""The Convex Prometheus endpoint (convex/http.ts ``GET /metrics``) through the dev backend,
read with the official parser: ``prometheus_client``'s ``text_string_to_metric_families``.

The dev backend serves HTTP actions under ``/http/`` as the open-source Convex backend does
on its API port (a deployment serves them on its ``.convex.site`` URL)."""

from __future__ import annotations

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.support.devbackend import DevBackend, claim
from tests.support.git_server import GitServer
from tests.support.paths import TEST_OPERATOR_TOKEN, TEST_SCRAPE_TOKEN, TEST_WORKER_TOKEN

pytestmark = pytest.mark.integration


def scrape(backend: DevBackend, token: str | None) -> httpx.Response:
    headers = {} if token is None else {"Authorization": f"Bearer {token}"}
    return httpx.get(f"{backend.url}/http/metrics", headers=headers, timeout=10)


def test_the_endpoint_parses_with_prometheus_client_and_matches_metrics_queue(
    dev_backend: DevBackend, git_server: GitServer
) -> None:
    for _ in range(3):
        dev_backend.enqueue(git_server.url("scrape", "sample"))
    with dev_backend.client() as client:
        claim(client, "w1", lease_ms=60_000)  # offer slot 0, accept what the dispatcher assigns

    reply = scrape(dev_backend, TEST_SCRAPE_TOKEN)
    assert reply.status_code == 200, reply.text
    assert reply.headers["content-type"].startswith("text/plain; version=0.0.4")
    families = {f.name: f for f in text_string_to_metric_families(reply.text)}

    with dev_backend.operator_client() as client:
        queue = client.call("query", "metrics:queue", {"token": TEST_OPERATOR_TOKEN})
    assert isinstance(queue, dict)

    jobs = {s.labels["status"]: s.value for s in families["fondation_queue_jobs"].samples}
    assert jobs == {status: float(n) for status, n in queue["counts"].items()}
    assert jobs["pending"] == 2
    assert jobs["claimed"] == 1
    assert families["fondation_queue_ready"].samples[0].value == queue["ready"] == 2
    assert families["fondation_queue_in_progress"].samples[0].value == 1
    assert families["fondation_queue_ready"].type == "gauge"
    age = families["fondation_queue_oldest_ready_age_seconds"].samples[0].value
    assert 0 <= age < 60
    # the dispatch: w1's one slot holds its job; the mode is one of the four, exactly one set
    assert families["fondation_queue_idle_slots"].samples[0].value == queue["idleSlots"] == 0
    modes = {s.labels["mode"]: s.value for s in families["fondation_queue_dispatcher_mode"].samples}
    assert set(modes) == {"idle", "sleeping", "active", "starved"}
    assert sorted(modes.values()) == [0, 0, 0, 1]
    windows = {s.labels["window"] for s in families["fondation_queue_window_completed"].samples}
    assert windows == {"1h", "1d"}
    for family in families.values():
        assert family.documentation, family.name


@pytest.mark.parametrize("token", [None, TEST_WORKER_TOKEN, TEST_OPERATOR_TOKEN, "wrong"])
def test_only_the_scrape_token_reads_it(dev_backend: DevBackend, token: str | None) -> None:
    reply = scrape(dev_backend, token)
    assert reply.status_code == 401
    assert "fondation_queue" not in reply.text


def test_an_unknown_route_is_404(dev_backend: DevBackend) -> None:
    reply = httpx.get(f"{dev_backend.url}/http/nothing-here", timeout=10)
    assert reply.status_code == 404
