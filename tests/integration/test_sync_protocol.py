"""The official clients' WebSocket subscriptions against the dev backend (devbackend/sync.ts).

The JS ``ConvexClient`` (what a web app's ``useQuery`` runs on) and the Python ``convex``
client's ``subscribe`` (its Rust core) speak Convex's sync protocol: connect, query-set
changes, transitions after each committed mutation, mutations over the socket, keep-alive.
Each one subscribes to ``jobs:listByUser`` (what a web app's ``useQuery`` would) and must
receive the result pushed after an enqueue made by someone else over HTTP and after its own
mutation over the socket. A commit that touches nothing a subscription read does not even
re-run it (the dev backend tracks read sets, as Convex does).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from convex import ConvexClient, ConvexError
from tests.support import TEST_OPERATOR_TOKEN, TEST_WORKER_TOKEN, DevBackend

pytestmark = pytest.mark.integration

REPO = "https://github.com/acme/widgets"
REPO_ROOT = Path(__file__).resolve().parents[2]
JS_SUBSCRIBE = Path(__file__).resolve().parent / "official_js_subscribe.mjs"
WAIT_S = 15.0


def next_message(ws: Any) -> dict[str, Any]:
    """The server's next message other than a protocol Ping: Pings come every SYNC_PING_MS
    whatever else happens, so on a slow machine one can fall between any two changes."""
    while True:
        message: dict[str, Any] = json.loads(ws.recv(timeout=WAIT_S))
        if message["type"] != "Ping":
            return message


def test_official_js_client_receives_pushed_updates(dev_backend: DevBackend) -> None:
    node = shutil.which("node")
    assert node is not None, "node is needed for the official JS client"
    plan = {
        "url": dev_backend.url,
        "workerToken": TEST_WORKER_TOKEN,
        "operatorToken": TEST_OPERATOR_TOKEN,
        "repoUrl": REPO,
    }
    done = subprocess.run(
        [node, str(JS_SUBSCRIBE)],
        input=json.dumps(plan),
        capture_output=True,
        text=True,
        timeout=90,
        cwd=REPO_ROOT,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:] + "\n" + dev_backend.log_tail()
    steps = {s["step"]: s for s in map(json.loads, done.stdout.splitlines())}
    assert steps["subscribed"] == {"step": "subscribed", "value": []}
    enqueued = steps["enqueued"]
    assert "timeout" not in enqueued, dev_backend.log_tail()
    job = dev_backend.dump("jobs")[0]
    assert [(j["jobId"], j["status"]) for j in enqueued["value"]] == [(job["_id"], "pending")]
    assert enqueued["afterMs"] < 2000  # pushed, not polled
    # Its own mutation over the socket resolves (a transition at or past its timestamp
    # arrived) and the subscription sees the job canceled.
    assert steps["canceled"]["reply"] == {"status": "canceled"}
    assert [j["status"] for j in steps["canceled"]["value"]] == ["canceled"]
    assert steps["wrong token"]["error"] == "ConvexError"
    assert steps["wrong token"]["data"]["code"] == "UNAUTHORIZED"


@pytest.fixture
def py_client(dev_backend: DevBackend) -> ConvexClient:
    return ConvexClient(dev_backend.url)


# A thread blocked on the Python client's iterator stalled the test's other calls on the
# client, so each next() is called when an update is due, bounded by the test timeout.
@pytest.mark.timeout(60)
def test_official_python_client_subscribe_receives_pushed_updates(
    dev_backend: DevBackend, py_client: ConvexClient
) -> None:
    sub = py_client.subscribe("jobs:listByUser", {"userId": "ada", "token": TEST_OPERATOR_TOKEN})
    assert next(sub) == []

    sent = time.monotonic()
    with dev_backend.operator_client() as operator:
        job_id = operator.enqueue(REPO, user_id="ada").job_id
    pushed = next(sub)
    assert time.monotonic() - sent < 2.0
    assert [(j["jobId"], j["status"]) for j in pushed] == [(job_id, "pending")]

    # A mutation over the socket: its reply, then the subscription's new result.
    reply = py_client.mutation("jobs:cancel", {"jobId": job_id, "token": TEST_OPERATOR_TOKEN})
    assert reply == {"status": "canceled"}
    assert [j["status"] for j in next(sub)] == ["canceled"]
    # A one-off query over the socket, and a function error as the client's ConvexError.
    got = py_client.query("jobs:get", {"jobId": job_id, "token": TEST_OPERATOR_TOKEN})
    assert got["status"] == "canceled"
    assert got["attempts"] == 0
    with pytest.raises(ConvexError) as refused:
        py_client.mutation("jobs:cancel", {"jobId": "nope", "token": TEST_OPERATOR_TOKEN})
    assert refused.value.data["code"] == "NOT_FOUND"
    sub.unsubscribe()


def test_a_commit_re_runs_only_the_subscriptions_it_touches(
    dev_backend: DevBackend,
) -> None:
    """A raw socket: one transition per change of the answer; a commit outside what the
    query read neither re-runs it nor pushes anything."""
    from websockets.sync.client import connect

    url = dev_backend.url.replace("http://", "ws://") + "/api/sync"
    with connect(url, open_timeout=10) as ws:
        ws.send(json.dumps({"type": "Connect", "sessionId": "s1", "connectionCount": 0}))
        ws.send(
            json.dumps(
                {
                    "type": "ModifyQuerySet",
                    "baseVersion": 0,
                    "newVersion": 1,
                    "modifications": [
                        {
                            "type": "Add",
                            "queryId": 7,
                            "udfPath": "jobs:listByUser",
                            "args": [{"userId": "ada", "token": TEST_OPERATOR_TOKEN}],
                        }
                    ],
                }
            )
        )
        first = next_message(ws)
        assert first["type"] == "Transition"
        assert first["startVersion"]["querySet"] == 0
        assert first["endVersion"]["querySet"] == 1
        assert first["modifications"] == [
            {"type": "QueryUpdated", "queryId": 7, "value": [], "logLines": [], "journal": None}
        ]
        with dev_backend.operator_client() as operator:
            job_id = operator.enqueue(REPO, user_id="ada").job_id
            second = next_message(ws)
            assert second["startVersion"] == first["endVersion"]
            assert [j["jobId"] for j in second["modifications"][0]["value"]] == [job_id]
            # Commits outside what it read (another user's job, and the dispatcher's ticks
            # for it) do not re-run it. The next message is the answer's next change.
            runs = dev_backend.stats()["subscriptions"]["runs"]
            operator.enqueue("https://github.com/acme/other", user_id="bob")
            time.sleep(0.5)  # and the dispatcher's ticks for it
            assert dev_backend.stats()["subscriptions"]["runs"] == runs
            assert dev_backend.stats()["subscriptions"]["skipped"] >= 1
            operator.cancel(job_id)
        third = next_message(ws)
        assert third["type"] == "Transition"
        assert third["startVersion"] == second["endVersion"]
        [change] = third["modifications"]
        assert change["queryId"] == 7
        assert [(j["jobId"], j["status"]) for j in change["value"]] == [(job_id, "canceled")]
        # An unknown message type is a FatalError, then the server closes the socket.
        ws.send(json.dumps({"type": "Bogus"}))
        fatal = next_message(ws)
        assert fatal["type"] == "FatalError"


def test_pause_cuts_the_socket_and_refuses_new_ones(dev_backend: DevBackend) -> None:
    from websockets.exceptions import ConnectionClosed, InvalidHandshake
    from websockets.sync.client import connect

    url = dev_backend.url.replace("http://", "ws://") + "/api/1.48.0/sync"
    with connect(url, open_timeout=10) as ws:
        dev_backend.pause("reset")
        with pytest.raises(ConnectionClosed):
            ws.recv(timeout=WAIT_S)
    with pytest.raises((OSError, InvalidHandshake)):
        connect(url, open_timeout=5)
    dev_backend.resume()
    with connect(url, open_timeout=10) as ws:
        ws.send(json.dumps({"type": "Connect", "sessionId": "s2", "connectionCount": 1}))
