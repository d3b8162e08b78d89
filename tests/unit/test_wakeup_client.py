"""The wake subscription's reading of Convex's sync messages (wire formats of convex-js
protocol.ts) and its URL; the live socket is exercised in tests/worker/test_wakeup.py."""

from __future__ import annotations

import json

import pytest
from pydantic import SecretStr

from fondation_worker.metrics import Metrics
from fondation_worker.wakeup import QUERY_ID, WakeupError, WakeupSubscription, sync_url

VERSION = {"querySet": 1, "identity": 0, "ts": "AAAAAAAAAAA="}


def transition(*mods: dict[str, object]) -> str:
    return json.dumps(
        {
            "type": "Transition",
            "startVersion": VERSION,
            "endVersion": VERSION,
            "modifications": mods,
        }
    )


@pytest.fixture
def sub() -> WakeupSubscription:
    return WakeupSubscription(
        "https://happy-otter-123.convex.cloud", SecretStr("t"), "worker-1", Metrics()
    )


def test_sync_url_follows_the_deployment_url() -> None:
    assert sync_url("https://happy-otter-123.convex.cloud") == (
        "wss://happy-otter-123.convex.cloud/api/sync"
    )
    assert sync_url("http://127.0.0.1:3210/") == "ws://127.0.0.1:3210/api/sync"
    with pytest.raises(ValueError, match="http"):
        sync_url("ftp://x")


def test_an_answer_is_read_from_our_query_only(sub: WakeupSubscription) -> None:
    updated = {"type": "QueryUpdated", "logLines": [], "journal": None}
    value = {"slots": [{"slot": 0.0, "state": "assigned", "jobId": "j1"}]}
    answer = sub._handle(transition({**updated, "queryId": QUERY_ID, "value": value}))
    assert answer is not None
    assert [(v.slot, v.state, v.job_id) for v in answer.slots] == [(0, "assigned", "j1")]
    other = transition({**updated, "queryId": QUERY_ID + 1, "value": {"slots": []}})
    assert sub._handle(other) is None
    empty = sub._handle(transition({**updated, "queryId": QUERY_ID, "value": {"slots": []}}))
    assert empty is not None
    assert empty.slots == ()
    assert sub._handle(json.dumps({"type": "Ping"})) is None


def test_a_refusal_or_a_broken_message_ends_the_session(sub: WakeupSubscription) -> None:
    failed = {
        "type": "QueryFailed",
        "queryId": QUERY_ID,
        "errorMessage": "Uncaught ConvexError: unauthorized",
        "errorData": {"code": "UNAUTHORIZED"},
        "logLines": [],
        "journal": None,
    }
    with pytest.raises(WakeupError, match="jobs:assignments failed: UNAUTHORIZED"):
        sub._handle(transition(failed))
    with pytest.raises(WakeupError, match="unexpected value"):
        sub._handle(
            transition(
                {
                    "type": "QueryUpdated",
                    "queryId": QUERY_ID,
                    "value": {"slots": [{"slot": 0, "state": "soon"}]},
                    "logLines": [],
                    "journal": None,
                }
            )
        )
    with pytest.raises(WakeupError, match="FatalError"):
        sub._handle(json.dumps({"type": "FatalError", "error": "boom"}))
    with pytest.raises(WakeupError, match="not JSON"):
        sub._handle("{")
