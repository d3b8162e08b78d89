"""The official Convex clients against the dev backend, beside the worker's own client.

The JS ``ConvexHttpClient`` (npm ``convex``) and the Python ``convex.http_client`` send
``format: "convex_encoded_json"`` (args as ``[object]`` from JS, as an object from Python)
and decode the reply themselves: if the dev backend answers them as Convex does, a web
app written against either works against it unchanged. Each client runs the same flow:
enqueue (``branch: null``) -> get -> cancel -> get -> a ``ConvexError`` with its code.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from convex.http_client import ConvexHttpClient
from official_js import js_calls
from pydantic import SecretStr

from convex import ConvexError
from fondation_worker.convex_client import ConvexClient
from fondation_worker.errors import NotFound, Unauthorized
from fondation_worker.models import Dropped, DropReason, Summary
from tests.support import TEST_OPERATOR_TOKEN, TEST_WORKER_TOKEN, DevBackend, claim

pytestmark = pytest.mark.integration

REPO = "https://github.com/acme/widgets"


def test_official_js_client_enqueue_get_cancel_and_convex_error(dev_backend: DevBackend) -> None:
    token = TEST_OPERATOR_TOKEN
    [enq] = js_calls(
        dev_backend.url,
        [
            {
                "kind": "mutation",
                "path": "jobs:enqueue",
                "args": {"repoUrl": REPO, "branch": None, "userId": "ada", "token": token},
            }
        ],
    )
    assert enq["ok"] is True
    assert enq["value"]["created"] is True
    job_id = enq["value"]["jobId"]
    got, canceled, after, missing, wrong_token = js_calls(
        dev_backend.url,
        [
            {"kind": "query", "path": "jobs:get", "args": {"jobId": job_id, "token": token}},
            {"kind": "mutation", "path": "jobs:cancel", "args": {"jobId": job_id, "token": token}},
            {"kind": "query", "path": "jobs:get", "args": {"jobId": job_id, "token": token}},
            {"kind": "mutation", "path": "jobs:cancel", "args": {"jobId": "nope", "token": token}},
            {"kind": "query", "path": "jobs:get", "args": {"jobId": job_id, "token": "wrong"}},
        ],
    )
    assert got["value"]["status"] == "pending"
    assert got["value"]["branch"] is None
    assert got["value"]["userId"] == "ada"
    assert canceled["value"] == {"status": "canceled"}
    assert after["value"]["status"] == "canceled"
    assert missing["ok"] is False
    assert missing["error"] == "ConvexError"
    assert missing["data"]["code"] == "NOT_FOUND"
    assert wrong_token["error"] == "ConvexError"
    assert wrong_token["data"]["code"] == "UNAUTHORIZED"


def test_official_python_client_enqueue_get_cancel_and_convex_error(
    dev_backend: DevBackend,
) -> None:
    client = ConvexHttpClient(dev_backend.url)
    token = TEST_OPERATOR_TOKEN
    enq = client.mutation(
        "jobs:enqueue", {"repoUrl": REPO, "branch": None, "userId": "ada", "token": token}
    )
    assert enq["created"] is True
    job_id = enq["jobId"]
    got = client.query("jobs:get", {"jobId": job_id, "token": token})
    assert got["status"] == "pending"
    assert got["branch"] is None
    assert client.mutation("jobs:cancel", {"jobId": job_id, "token": token}) == {
        "status": "canceled"
    }
    assert client.query("jobs:get", {"jobId": job_id, "token": token})["status"] == "canceled"
    with pytest.raises(ConvexError) as missing:
        client.mutation("jobs:cancel", {"jobId": "nope", "token": token})
    assert missing.value.data["code"] == "NOT_FOUND"
    with pytest.raises(ConvexError) as refused:
        client.query("jobs:get", {"jobId": job_id, "token": "wrong"})
    assert refused.value.data["code"] == "UNAUTHORIZED"


def test_worker_client_same_flow(dev_backend: DevBackend) -> None:
    # The worker's client as the operator commands use it: with OPERATOR_TOKEN.
    with ConvexClient(dev_backend.url, SecretStr(TEST_OPERATOR_TOKEN), timeout_s=5) as client:
        enq = client.enqueue(REPO, user_id="ada")
        job = client.get_job(enq.job_id)
        assert job is not None
        assert job.status == "pending"
        assert job.branch is None
        assert client.cancel(enq.job_id).status == "canceled"
        after = client.get_job(enq.job_id)
        assert after is not None
        assert after.status == "canceled"
        with pytest.raises(NotFound):
            client.cancel("nope")
    with (
        ConvexClient(dev_backend.url, SecretStr("wrong"), timeout_s=5) as stranger,
        pytest.raises(Unauthorized),
    ):
        stranger.get_job(enq.job_id)


@pytest.mark.parametrize(
    "fmt", [None, "json", "convex_clean_json", "convex_encoded_json", "convex_json"]
)
@pytest.mark.parametrize("wrap", [False, True])
def test_every_convex_format_and_args_shape_is_accepted(
    dev_backend: DevBackend, fmt: str | None, wrap: bool
) -> None:
    token = TEST_OPERATOR_TOKEN
    args: dict[str, Any] = {"repoUrl": REPO, "userId": "ada", "token": token}
    body: dict[str, Any] = {"path": "jobs:enqueue", "args": [args] if wrap else args}
    if fmt is not None:
        body["format"] = fmt
    reply = httpx.post(f"{dev_backend.url}/api/mutation", json=body, timeout=10)
    assert reply.status_code == 200, reply.text
    assert reply.json()["status"] == "success"
    job_id = reply.json()["value"]["jobId"]
    run = {"args": {"jobId": "nope", "token": token}, **({"format": fmt} if fmt else {})}
    error = httpx.post(f"{dev_backend.url}/api/run/jobs/cancel", json=run, timeout=10)
    assert error.status_code == 200
    assert error.json()["status"] == "error"
    assert error.json()["errorData"]["code"] == "NOT_FOUND"
    got = httpx.post(
        f"{dev_backend.url}/api/query",
        json={
            "path": "jobs:get",
            "args": {"jobId": job_id, "token": token},
            "format": fmt or "json",
        },
        timeout=10,
    )
    assert got.json()["value"]["jobId"] == job_id
    # Encoded replies write numbers as Convex's Rust serializer does (0.0, not 0)
    assert ('"attempts":0.0' in got.text) == (fmt in ("convex_encoded_json", "convex_json"))


def test_unknown_format_and_bad_args_are_400_like_convex(dev_backend: DevBackend) -> None:
    url = f"{dev_backend.url}/api/query"
    bad_format = httpx.post(
        url, json={"path": "jobs:get", "args": {"jobId": "x"}, "format": "xml"}, timeout=10
    )
    assert bad_format.status_code == 400
    assert bad_format.json() == {
        "code": "BadFormat",
        "message": "format param must be one of [`json`]. Got xml",
    }
    two = httpx.post(url, json={"path": "jobs:get", "args": [{}, {}]}, timeout=10)
    assert two.status_code == 400


def test_dropped_docs_reach_the_job_and_the_metrics(dev_backend: DevBackend) -> None:
    with dev_backend.operator_client() as operator:
        job_id = operator.enqueue(REPO, user_id="ada").job_id
    with ConvexClient(dev_backend.url, SecretStr(TEST_WORKER_TOKEN), timeout_s=5) as client:
        claimed = claim(client, "w1", 60_000)
        assert claimed is not None
        client.start(job_id, claimed.lease_token)
        dropped = Dropped(
            count=3,
            reasons=[
                DropReason(reason="over_doc_cap", count=2),
                DropReason(reason="symlink", count=1),
            ],
        )
        summary = Summary(docs_count=0, duration_ms=10, dropped=dropped)
        client.complete(job_id, claimed.lease_token, "run-1", summary)
        job = client.get_job(job_id, claimed.lease_token)  # the job it held
        assert job is not None
        assert job.result is not None
        assert job.result.dropped == dropped
        metrics = client.queue_metrics()
        assert metrics["lastHour"]["droppedDocs"] == 3
        assert metrics["lastHour"]["jobsWithDroppedDocs"] == 1
