from __future__ import annotations

import datetime
import email.utils
import io
import json
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

from fondation_worker.convex_client import (
    MAX_RETRY_AFTER_S,
    RATE_LIMIT_RETRIES,
    ConvexClient,
    retry_after_s,
)
from fondation_worker.errors import (
    ConvexFunctionError,
    ConvexLeaseLost,
    ConvexRequestError,
    ConvexUnavailable,
    InvalidArgument,
    InvalidState,
    LeaseLost,
    NotFound,
    Unauthorized,
)
from fondation_worker.logging_setup import configure_logging
from fondation_worker.metrics import Metrics
from fondation_worker.models import Progress
from fondation_worker.redact import Redactor

TOKEN = "worker-token-for-client-tests"
LEASE = SecretStr("7.leasetoken.abc")

Handler = Callable[[httpx.Request], httpx.Response]


def client(handler: Handler, **kw: Any) -> tuple[ConvexClient, list[float]]:
    sleeps: list[float] = []
    c = ConvexClient(
        "https://example.convex.cloud/",
        SecretStr(TOKEN),
        transport=httpx.MockTransport(handler),
        sleep=sleeps.append,
        rand=lambda: 0.5,
        **kw,
    )
    return c, sleeps


def ok(value: Any, status: int = 200) -> httpx.Response:
    return httpx.Response(status, json={"status": "success", "value": value, "logLines": []})


def err(code: str | None, status: int = 200, message: str = "boom") -> httpx.Response:
    body: dict[str, Any] = {"status": "error", "errorMessage": message, "logLines": []}
    if code is not None:
        body["errorData"] = {"code": code, "message": f"{code.lower()} happened"}
    return httpx.Response(status, json=body)


CLAIMED = {
    "jobId": "j1",
    "leaseToken": "1.abc.def",
    "leaseUntil": 1.7e12,
    "attempt": 1,
    "maxAttempts": 3,
    "repoUrl": "https://github.com/a/b",
    "branch": None,
    "userId": "operator",
}


def test_request_shape_and_claim_reply() -> None:
    seen: list[dict[str, Any]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        assert request.url == "https://example.convex.cloud/api/mutation"
        seen.append(json.loads(request.content))
        return ok({**CLAIMED, "githubToken": "ghp_" + "x" * 36})

    c, _ = client(handler)
    job = c.claim_one("w1", 90000, "req-1")
    assert job is not None
    assert job.job_id == "j1"
    assert job.branch is None
    assert job.github_token is not None
    assert "ghp_" not in repr(job)
    assert seen == [
        {
            "path": "jobs:claimOne",
            "args": {
                "token": TOKEN,
                "workerId": "w1",
                "leaseMs": 90000,
                "requestId": "req-1",
                "slots": [0],
            },
            "format": "json",
        }
    ]


def test_claim_none() -> None:
    c, _ = client(lambda r: ok(None))
    assert c.claim_one("w1", 90000) is None


@pytest.mark.parametrize("status", [200, 560])
@pytest.mark.parametrize(
    ("code", "exc"),
    [
        ("UNAUTHORIZED", Unauthorized),
        ("LEASE_LOST", ConvexLeaseLost),
        ("INVALID_ARGUMENT", InvalidArgument),
        ("NOT_FOUND", NotFound),
        ("INVALID_STATE", InvalidState),
        (None, ConvexFunctionError),
        ("SOMETHING_NEW", ConvexFunctionError),
    ],
)
def test_error_codes(status: int, code: str | None, exc: type[Exception]) -> None:
    calls = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(1)
        return err(code, status)

    c, _ = client(handler)
    with pytest.raises(exc):
        c.start("j1", LEASE)
    assert len(calls) == 1  # function errors are never retried


def test_lease_lost_is_a_lease_lost() -> None:
    c, _ = client(lambda r: err("LEASE_LOST"))
    with pytest.raises(LeaseLost):
        c.heartbeat("j1", LEASE, 90000)


@pytest.mark.parametrize("failure", ["500", "502", "503", "connect", "timeout", "garbage"])
def test_transient_failures_are_retried_with_jitter(failure: str) -> None:
    attempts: list[str] = []
    request_ids: list[str] = []
    limit = 0

    def handler(request: httpx.Request) -> httpx.Response:
        nonlocal limit
        attempts.append(failure)
        request_ids.append(json.loads(request.content)["args"]["requestId"])
        if len(attempts) < limit:
            if failure == "connect":
                raise httpx.ConnectError("refused", request=request)
            if failure == "timeout":
                raise httpx.ReadTimeout("slow", request=request)
            if failure == "garbage":
                return httpx.Response(200, text="<html>proxy</html>")
            return httpx.Response(int(failure), text="oops")
        return ok(None)

    # claimOne retries once, with the same request id: no double claim.
    limit = 2
    c, sleeps = client(handler, max_retries=3)
    assert c.claim_one("w1", 90000) is None
    assert len(attempts) == 2
    assert len(sleeps) == 1
    assert len(set(request_ids)) == 1
    # Other calls use the client's retry budget, with growing delays.
    attempts.clear()
    limit = 3
    c, sleeps = client(handler, max_retries=3)
    assert c.call("mutation", "jobs:claimOne", {"requestId": "r"}) is None
    assert len(attempts) == 3
    assert len(sleeps) == 2
    assert sleeps[0] < sleeps[1]


def test_retries_are_bounded() -> None:
    metrics = Metrics()
    c, sleeps = client(lambda r: httpx.Response(503), max_retries=2, metrics=metrics)
    with pytest.raises(ConvexUnavailable):
        c.start("j1", LEASE)
    assert len(sleeps) == 2
    assert (
        metrics.registry.get_sample_value(
            "fondation_worker_convex_calls_total", {"function": "jobs:start", "outcome": "http_5xx"}
        )
        == 3
    )


@pytest.mark.parametrize("status", [400, 401, 403, 404, 422])
def test_client_errors_are_not_retried(status: int) -> None:
    calls = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(1)
        return httpx.Response(status, text="no")

    c, _ = client(handler)
    with pytest.raises(ConvexRequestError):
        c.start("j1", LEASE)
    assert calls == [1]


def test_heartbeat_is_not_retried_and_carries_progress() -> None:
    bodies: list[dict[str, Any]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        bodies.append(json.loads(request.content))
        raise httpx.ConnectError("down", request=request)

    c, sleeps = client(handler)
    with pytest.raises(ConvexUnavailable):
        c.heartbeat("j1", LEASE, 3000, Progress(step="chapters", current_step=4, total_steps=5))
    assert len(bodies) == 1
    assert sleeps == []
    assert bodies[0]["args"]["progress"] == {"step": "chapters", "currentStep": 4, "totalSteps": 5}
    assert bodies[0]["args"]["leaseToken"] == LEASE.get_secret_value()


def test_reply_not_matching_the_contract() -> None:
    c, _ = client(lambda r: ok({"cancelRequested": "maybe"}))
    with pytest.raises(ConvexFunctionError):
        c.heartbeat("j1", LEASE, 3000)


def test_retry_or_fail_accepts_canceled() -> None:
    c, _ = client(lambda r: ok({"status": "canceled"}))
    assert c.retry_or_fail("j1", LEASE, "x", "transient").status == "canceled"


def test_ambiguous_retry_is_flagged() -> None:
    calls = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(1)
        if len(calls) == 1:
            raise httpx.ReadTimeout("lost reply", request=request)
        return err("INVALID_STATE")

    c, _ = client(handler)
    with pytest.raises(InvalidState) as info:
        c.start("j1", LEASE)
    assert info.value.after_retry


def test_tokens_never_reach_the_logs() -> None:
    stream = io.StringIO()
    configure_logging(Redactor(), stream=stream, level="debug")
    github = "ghp_" + "q" * 36

    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    c, _ = client(handler, max_retries=1)
    with pytest.raises(ConvexUnavailable):
        c.enqueue("https://github.com/a/b", github_token=SecretStr(github))
    with pytest.raises(ConvexUnavailable):
        c.upload_docs("j1", LEASE, "run", [])
    text = stream.getvalue()
    assert "convex.call" in text
    for secret in (TOKEN, github, LEASE.get_secret_value()):
        assert secret not in text


def test_operator_calls_shapes_and_retries() -> None:
    seen: list[tuple[str, str, dict[str, Any]]] = []
    replies: list[httpx.Response] = []

    def handler(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        seen.append((request.url.path, body["path"], body["args"]))
        return replies.pop(0)

    c, sleeps = client(handler)
    replies.append(ok([{"jobId": "j1", "status": "running", "why": "lease_expired"}]))
    with pytest.raises(ConvexFunctionError, match="does not match the contract"):
        c.list_stuck(60_000)
    assert seen[-1] == (
        "/api/query",
        "operator:listStuck",
        {"token": TOKEN, "runningLongerThanMs": 60_000},
    )
    replies.append(ok({"moved": 2, "dead": 0, "canceled": 1, "more": False, "jobs": []}))
    reply = c.reclaim_now()
    assert (reply.moved, reply.canceled, reply.total) == (2, 1, 3)
    assert seen[-1] == ("/api/mutation", "operator:reclaimNow", {"token": TOKEN})
    # requeue is not retried: after a lost reply the retry would be refused (no longer dead)
    replies.append(httpx.Response(503))
    with pytest.raises(ConvexUnavailable):
        c.requeue("j1")
    assert seen[-1] == ("/api/mutation", "operator:requeue", {"token": TOKEN, "jobId": "j1"})
    assert sleeps == []
    replies.append(err("INVALID_STATE"))
    with pytest.raises(InvalidState):
        c.requeue("j1")


def test_rate_limited_calls_wait_for_retry_after_and_keep_their_budget() -> None:
    replies = [
        httpx.Response(429, headers={"Retry-After": "7"}, text="slow down"),
        httpx.Response(429, text="slow down"),
        ok({"cancelRequested": False, "leaseUntil": 1.0}),
    ]
    calls: list[int] = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(1)
        return replies[len(calls) - 1]

    metrics = Metrics()
    # heartbeat has no retry budget at all: a 429 was not run, so it is retried anyway
    c, sleeps = client(handler, metrics=metrics)
    assert c.heartbeat("j1", LEASE, 60_000).lease_until == 1.0
    assert len(calls) == 3
    assert sleeps[0] == 7.0
    assert 0.5 <= sleeps[1] <= 1.0  # no Retry-After: the second back-off step
    sample = metrics.registry.get_sample_value(
        "fondation_worker_convex_calls_total", {"function": "jobs:heartbeat", "outcome": "http_429"}
    )
    assert sample == 2


def test_rate_limit_waits_are_capped_and_bounded() -> None:
    later = email.utils.format_datetime(
        datetime.datetime.now(datetime.UTC) + datetime.timedelta(hours=1), usegmt=True
    )
    c, sleeps = client(lambda r: httpx.Response(429, headers={"Retry-After": later}))
    with pytest.raises(ConvexUnavailable):
        c.heartbeat("j1", LEASE, 60_000)
    assert sleeps == [MAX_RETRY_AFTER_S] * RATE_LIMIT_RETRIES


def test_a_rate_limited_enqueue_is_retried_and_not_flagged_ambiguous() -> None:
    replies = [httpx.Response(429, headers={"Retry-After": "0"}), err("INVALID_ARGUMENT")]
    calls: list[int] = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(1)
        return replies[len(calls) - 1]

    c, sleeps = client(handler)
    with pytest.raises(InvalidArgument) as raised:
        c.enqueue("https://github.com/a/b")
    assert sleeps == [0.0]
    assert raised.value.after_retry is False


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("12", 12.0),
        ("Wed, 21 Oct 2015 07:28:30 GMT", 30.0),
        ("Wed, 21 Oct 2015 07:27:00 GMT", 0.0),
        ("soon", None),
        (None, None),
    ],
)
def test_retry_after_header_forms(header: str | None, expected: float | None) -> None:
    now = datetime.datetime(2015, 10, 21, 7, 28, 0, tzinfo=datetime.UTC).timestamp()
    assert retry_after_s(header, now) == expected
