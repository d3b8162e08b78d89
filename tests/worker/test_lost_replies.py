"""Lost replies against the dev backend: the call was applied, its reply never arrived.

The client retries; Convex must recognise the retry as the same call (claimOne by its
request id, the final calls by their lease token) instead of burning an attempt or
answering LEASE_LOST, which the worker would report as a fence. A whole worker whose
claim replies are lost is in tests/worker/test_integration.py.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from pydantic import SecretStr

from fondation_worker.convex_client import ConvexClient
from tests.support import DevBackend, enqueue, get_job

pytestmark = pytest.mark.integration

REPO = "https://github.com/acme/widgets"


class LosingTransport(httpx.HTTPTransport):
    """Delivers each request, then loses the reply of the next ``lose[path]`` calls."""

    def __init__(self) -> None:
        super().__init__()
        self.lose: dict[str, int] = {}
        self.sent: list[tuple[str, dict[str, Any]]] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        import json

        body = json.loads(request.content)
        self.sent.append((body["path"], body["args"]))
        response = super().handle_request(request)
        if self.lose.get(body["path"], 0) > 0:
            self.lose[body["path"]] -= 1
            response.read()
            response.close()
            raise httpx.ReadTimeout("reply lost", request=request)
        return response


def client(backend: DevBackend, transport: LosingTransport) -> ConvexClient:
    return backend.client(transport=transport, sleep=lambda _s: None)


def test_a_claim_repeated_across_polls_after_lost_replies_burns_no_attempt(
    dev_backend: DevBackend,
) -> None:
    job_id = enqueue(dev_backend, REPO, max_attempts=1)
    dev_backend.assigned_to("w1", job_id)
    transport = LosingTransport()
    transport.lose["jobs:claimOne"] = 4  # two claims of two tries each lose their reply
    with client(dev_backend, transport) as convex:
        for _ in range(2):
            with pytest.raises(Exception, match="claimOne"):
                convex.claim_one("w1", 60_000, "poll-request-1")
        job = convex.claim_one("w1", 60_000, "poll-request-1")  # the third claim, same id
    assert job is not None
    assert job.job_id == job_id
    assert job.attempt == 1
    public = get_job(dev_backend, job_id)
    assert public["status"] == "claimed"
    assert public["attempts"] == 1


@pytest.mark.parametrize("call", ["retry_or_fail", "release", "acknowledge_cancel"])
def test_a_final_call_whose_reply_was_lost_is_not_a_fence(
    dev_backend: DevBackend, call: str
) -> None:
    job_id = enqueue(dev_backend, REPO)
    dev_backend.assigned_to("w1", job_id)
    transport = LosingTransport()
    with client(dev_backend, transport) as convex:
        job = convex.claim_one("w1", 60_000, "r-1")
        assert job is not None
        token: SecretStr = job.lease_token
        if call == "acknowledge_cancel":
            with dev_backend.operator_client() as operator:
                operator.cancel(job_id)
        path = {
            "retry_or_fail": "jobs:retryOrFail",
            "release": "jobs:release",
            "acknowledge_cancel": "jobs:acknowledgeCancel",
        }[call]
        transport.lose[path] = 1
        if call == "retry_or_fail":
            reply = convex.retry_or_fail(job_id, token, "boom", "transient")
            assert reply.status == "failed"
        elif call == "release":
            convex.release(job_id, token, "shutdown")
        else:
            convex.acknowledge_cancel(job_id, token)
    assert [p for p, _ in transport.sent].count(path) == 2  # applied, lost, retried
    public = get_job(dev_backend, job_id)
    expected = {"retry_or_fail": "failed", "release": "pending", "acknowledge_cancel": "canceled"}
    assert public["status"] == expected[call]
    if call == "release":
        assert public["deferrals"] == 1  # applied once
