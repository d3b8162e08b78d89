"""``fondation-worker stuck | reclaim | requeue | cancel | enqueue | status`` against a fake
Convex HTTP API.

The replies follow docs/CONTRACT.md (the operator functions accept only OPERATOR_TOKEN, the
metrics either token); the real functions are covered by the vitest suites and by
tests/worker/test_stuck_jobs.py against the dev backend.
"""

from __future__ import annotations

import functools
import json
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from fondation_worker import assembly, cli, cli_operator
from fondation_worker.convex_client import ConvexClient

TOKEN = "cli-unit-test-token-0123456789"  # the worker token
OPERATOR = "cli-unit-operator-token-9876543210"
NOW_MS = 1_767_000_000_000.0

STUCK = [
    {
        "jobId": "j-expired",
        "status": "running",
        "why": "lease_expired",
        "attempts": 1,
        "maxAttempts": 3,
        "workerId": "host-a-1",
        "leaseExpiresAt": NOW_MS - 125_000,
        "startedAt": NOW_MS - 600_000,
        "repoUrl": "https://github.com/acme/widgets",
        "branch": "main",
        "cancelRequested": False,
    },
    {
        "jobId": "j-long",
        "status": "running",
        "why": "running_too_long",
        "attempts": 2,
        "maxAttempts": 3,
        "workerId": "host-b-2",
        "leaseExpiresAt": NOW_MS + 60_000,
        "startedAt": NOW_MS - 2 * 3_600_000,
        "repoUrl": "https://github.com/acme/gadgets",
        "branch": None,
        "cancelRequested": True,
    },
]


def public_job(job_id: str, status: str, **extra: Any) -> dict[str, Any]:
    return {
        "jobId": job_id,
        "repoUrl": "https://github.com/acme/widgets",
        "branch": None,
        "userId": "operator",
        "status": status,
        "runAt": NOW_MS,
        "attempts": 2,
        "maxAttempts": 2,
        "deferrals": 0,
        "cancelRequested": False,
        "createdAt": NOW_MS - 10_000,
        "updatedAt": NOW_MS,
        **extra,
    }


class FakeConvex:
    """Answers the operator functions from in-memory state and records every call."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.stuck: list[dict[str, Any]] = []
        self.jobs: dict[str, dict[str, Any]] = {}
        self.reclaim: dict[str, Any] = {
            "moved": 0,
            "dead": 0,
            "canceled": 0,
            "more": False,
            "jobs": [],
        }
        self.requeue_error: dict[str, str] | None = None
        self.down = False

    def handle(self, request: httpx.Request) -> httpx.Response:
        if self.down:
            raise httpx.ConnectError("connection refused")
        body = json.loads(request.content)
        path, args = body["path"], body["args"]
        self.calls.append((path, args))
        if path == "metrics:queue":
            if args.get("token") not in (TOKEN, OPERATOR):
                return self._error("UNAUTHORIZED", "unauthorized")
            return self._ok({"counts": {"pending": 1}, "now": NOW_MS})
        # Every other function here is an operator function: the worker token is refused.
        if args.get("token") != OPERATOR:
            return self._error("UNAUTHORIZED", "unauthorized")
        if path == "jobs:enqueue":
            return self._ok({"jobId": "j-new", "created": True})
        if path == "operator:listStuck":
            return self._ok(self.stuck)
        if path == "operator:reclaimNow":
            return self._ok(self.reclaim)
        if path == "jobs:get":
            return self._ok(self.jobs.get(args["jobId"]))
        if path == "operator:requeue":
            if self.requeue_error is not None:
                return self._error(self.requeue_error["code"], self.requeue_error["message"])
            job = self.jobs[args["jobId"]]
            job.update(
                status="pending",
                attempts=0,
                requeues=[{"at": NOW_MS, "attempts": 2, "deferrals": 0}],
            )
            return self._ok(job)
        if path == "jobs:cancel":
            job = self.jobs.get(args["jobId"])
            if job is None:
                return self._error("NOT_FOUND", "no such job")
            if job["status"] in ("pending", "failed"):
                job.update(status="canceled", cancelRequested=True)
            elif job["status"] in ("claimed", "running"):
                job.update(cancelRequested=True)
            return self._ok({"status": job["status"]})
        return self._error(None, f"Could not find public function for '{path}'")

    def paths(self) -> list[str]:
        return [p for p, _ in self.calls]

    @staticmethod
    def _ok(value: Any) -> httpx.Response:
        return httpx.Response(200, json={"status": "success", "value": value, "logLines": []})

    @staticmethod
    def _error(code: str | None, message: str) -> httpx.Response:
        body: dict[str, Any] = {"status": "error", "errorMessage": message, "logLines": []}
        if code is not None:
            body["errorData"] = {"code": code, "message": message}
        return httpx.Response(200, json=body)


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> FakeConvex:
    fake = FakeConvex()
    for name, value in {
        "CONVEX_URL": "http://127.0.0.1:3999",
        "WORKER_TOKEN": TOKEN,
        "OPERATOR_TOKEN": OPERATOR,
        "TEMP_DIR": str(tmp_path / "tmp"),
        "JOB_TIMEOUT_MS": "5400000",
    }.items():
        monkeypatch.setenv(name, value)

    # The real assembly.connect picks the token; only the transport is faked.
    monkeypatch.setattr(
        assembly,
        "ConvexClient",
        functools.partial(
            ConvexClient, transport=httpx.MockTransport(fake.handle), sleep=lambda _s: None
        ),
    )
    monkeypatch.setattr(cli_operator.time, "time", lambda: NOW_MS / 1000)
    return fake


def run(*args: str) -> Any:
    return CliRunner().invoke(cli.app, list(args))


# --- stuck -------------------------------------------------------------------------------


def test_stuck_json_lists_the_jobs_and_defaults_to_job_timeout(fake: FakeConvex) -> None:
    fake.stuck = STUCK
    result = run("stuck", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == STUCK
    assert fake.calls == [
        ("operator:listStuck", {"token": OPERATOR, "runningLongerThanMs": 5400000})
    ]
    assert OPERATOR not in result.output


def test_stuck_passes_the_threshold(fake: FakeConvex) -> None:
    result = run("stuck", "--running-longer-than", "120000", "--json")
    assert result.exit_code == 0
    assert json.loads(result.stdout) == []
    assert fake.calls[0][1]["runningLongerThanMs"] == 120000
    assert run("stuck", "--running-longer-than", "-5").exit_code == 2  # refused by typer


def test_stuck_table(fake: FakeConvex) -> None:
    result = run("stuck")
    assert result.exit_code == 0
    assert result.stdout.strip() == "no stuck jobs (lease expired, or running longer than 1h 30m)"
    fake.stuck = STUCK
    result = run("stuck")
    assert result.exit_code == 0
    lines = result.stdout.splitlines()
    assert lines[0] == "2 stuck job(s) (lease expired, or running longer than 1h 30m):"
    assert lines[1].split() == ["JOB", "STATUS", "WHY", "ATTEMPT", "WORKER", "SINCE", "REPOSITORY"]
    assert lines[2].split()[:5] == ["j-expired", "running", "lease_expired", "1/3", "host-a-1"]
    assert "lease expired 2m 05s ago" in lines[2]
    assert "https://github.com/acme/widgets (main)" in lines[2]
    assert "running (cancel requested)" in lines[3]
    assert "running for 2h 00m" in lines[3]


def test_stuck_when_convex_is_unreachable_or_the_token_is_wrong(
    fake: FakeConvex, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake.down = True
    result = run("stuck")
    assert result.exit_code == 1
    assert "ConnectError" in result.stderr
    fake.down = False
    monkeypatch.setenv("OPERATOR_TOKEN", "another-token-0123456789")
    result = run("stuck", "--json")
    assert result.exit_code == 1
    assert "operator:listStuck: unauthorized" in result.stderr
    assert "another-token" not in result.output


OPERATOR_COMMANDS = (
    ["stuck"],
    ["reclaim"],
    ["requeue", "j1", "--yes"],
    ["cancel", "j1", "--yes"],
    ["enqueue", "https://github.com/acme/widgets"],
)


def test_config_errors_exit_2(fake: FakeConvex, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LEASE_MS", "soon")
    for args in OPERATOR_COMMANDS:
        result = run(*args)
        assert result.exit_code == 2, args
        assert "config error: LEASE_MS" in result.stderr
    assert fake.calls == []


@pytest.mark.parametrize("args", OPERATOR_COMMANDS, ids=lambda a: a[0])
def test_operator_commands_run_without_the_worker_token(
    fake: FakeConvex, monkeypatch: pytest.MonkeyPatch, args: list[str]
) -> None:
    # An operator's laptop holds CONVEX_URL and OPERATOR_TOKEN, never a worker's token.
    monkeypatch.delenv("WORKER_TOKEN")
    fake.jobs["j1"] = public_job("j1", "dead")
    result = run(*args)
    assert result.exit_code == 0, result.output
    assert fake.calls
    assert {a["token"] for _, a in fake.calls} == {OPERATOR}


@pytest.mark.parametrize("args", OPERATOR_COMMANDS, ids=lambda a: a[0])
def test_operator_commands_without_operator_token_exit_2_and_call_nothing(
    fake: FakeConvex, monkeypatch: pytest.MonkeyPatch, args: list[str]
) -> None:
    # Fail-closed: never a fallback to the worker token.
    monkeypatch.delenv("OPERATOR_TOKEN")
    fake.jobs["j1"] = public_job("j1", "dead")
    result = run(*args)
    assert result.exit_code == 2, result.output
    assert "config error: OPERATOR_TOKEN: is required by the operator commands" in result.stderr
    assert "the worker token has no operator rights" in result.stderr
    assert fake.calls == []
    assert TOKEN not in result.output


# --- reclaim -----------------------------------------------------------------------------


def test_reclaim_prints_what_happened(fake: FakeConvex) -> None:
    result = run("reclaim")
    assert result.exit_code == 0
    assert result.stdout.strip() == "no expired leases: nothing to reclaim"
    fake.reclaim = {
        "moved": 1,
        "dead": 1,
        "canceled": 0,
        "more": True,
        "jobs": [{"jobId": "j1", "outcome": "pending"}, {"jobId": "j2", "outcome": "dead"}],
    }
    result = run("reclaim")
    assert result.exit_code == 0
    assert result.stdout.splitlines() == [
        "reclaimed 2 expired lease(s): 1 back to pending, 1 dead (no attempt left), "
        "0 canceled (cancel requested)",
        "  j1  -> pending",
        "  j2  -> dead",
        "more expired leases remain: run `fondation-worker reclaim` again",
    ]
    result = run("reclaim", "--json")
    assert result.exit_code == 0
    assert json.loads(result.stdout) == fake.reclaim
    assert fake.paths() == ["operator:reclaimNow"] * 3


# --- requeue -----------------------------------------------------------------------------


def dead_job(fake: FakeConvex) -> None:
    fake.jobs["j-dead"] = public_job(
        "j-dead",
        "dead",
        lastError="RuntimeError: boom",
        lastErrorKind="transient",
        completedAt=NOW_MS,
    )


def test_requeue_without_yes_shows_the_job_and_refuses(fake: FakeConvex) -> None:
    dead_job(fake)
    result = run("requeue", "j-dead")
    assert result.exit_code == 1
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["job", "j-dead"]
    assert lines[1].split() == ["status", "dead"]
    assert "error     transient: RuntimeError: boom" in lines
    assert lines[-1] == "re-run with --yes to requeue"
    assert fake.paths() == ["jobs:get"]
    assert fake.jobs["j-dead"]["status"] == "dead"


def test_requeue_with_yes(fake: FakeConvex) -> None:
    dead_job(fake)
    result = run("requeue", "j-dead", "--yes")
    assert result.exit_code == 0, result.output
    assert fake.paths() == ["jobs:get", "operator:requeue"]
    assert fake.calls[1][1] == {"token": OPERATOR, "jobId": "j-dead"}
    assert result.stdout.splitlines()[-1] == "job j-dead requeued: pending, attempts reset to 0/2"


@pytest.mark.parametrize(
    "status", ["pending", "claimed", "running", "failed", "completed", "canceled"]
)
def test_requeue_of_a_job_that_is_not_dead_is_one_line(fake: FakeConvex, status: str) -> None:
    fake.jobs["j1"] = public_job("j1", status)
    result = run("requeue", "j1", "--yes")
    assert result.exit_code == 1
    assert result.stdout == ""
    assert (
        result.stderr == f"fondation-worker: job j1 is {status}: only a dead job can be requeued\n"
    )
    assert fake.paths() == ["jobs:get"]


def test_requeue_of_an_unknown_job(fake: FakeConvex) -> None:
    result = run("requeue", "nope", "--yes")
    assert result.exit_code == 1
    assert result.stderr == "fondation-worker: job nope not found\n"


def test_requeue_refused_by_convex(fake: FakeConvex) -> None:
    dead_job(fake)
    fake.requeue_error = {
        "code": "INVALID_STATE",
        "message": "job j-other with the same dedupe key is running: only one may be active",
    }
    result = run("requeue", "j-dead", "--yes")
    assert result.exit_code == 1
    assert result.stderr.strip() == (
        "fondation-worker: not requeued: operator:requeue: job j-other with the same dedupe key "
        "is running: only one may be active"
    )
    assert fake.paths() == ["jobs:get", "operator:requeue"]  # not retried


# --- cancel ------------------------------------------------------------------------------


def test_cancel_needs_yes_then_cancels_a_queued_job(fake: FakeConvex) -> None:
    fake.jobs["j1"] = public_job("j1", "pending", attempts=0)
    result = run("cancel", "j1")
    assert result.exit_code == 1
    assert "re-run with --yes to cancel" in result.stdout
    assert fake.paths() == ["jobs:get"]
    result = run("cancel", "j1", "--yes")
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[-1] == "job j1 canceled"
    assert fake.calls[-1] == ("jobs:cancel", {"token": OPERATOR, "jobId": "j1"})
    assert fake.jobs["j1"]["status"] == "canceled"


def test_cancel_of_a_running_job_requests_it(fake: FakeConvex) -> None:
    fake.jobs["j2"] = public_job("j2", "running")
    result = run("cancel", "j2", "--yes")
    assert result.exit_code == 0, result.output
    assert "j2 is running: cancel requested" in result.stdout
    assert fake.jobs["j2"]["cancelRequested"] is True


def test_cancel_of_an_ended_or_unknown_job(fake: FakeConvex) -> None:
    fake.jobs["j3"] = public_job("j3", "completed")
    result = run("cancel", "j3", "--yes")
    assert result.exit_code == 0
    assert "already ended (completed): nothing to cancel" in result.stdout
    assert "jobs:cancel" not in fake.paths()
    result = run("cancel", "nope", "--yes")
    assert result.exit_code == 1
    assert "job nope not found" in result.stderr


@pytest.mark.parametrize("args", OPERATOR_COMMANDS, ids=lambda a: a[0])
def test_operator_commands_send_only_the_operator_token(fake: FakeConvex, args: list[str]) -> None:
    fake.jobs["j1"] = public_job("j1", "dead")
    result = run(*args)
    assert result.exit_code == 0, result.output
    assert fake.calls
    assert {a["token"] for _, a in fake.calls} == {OPERATOR}
    assert OPERATOR not in result.output
    assert TOKEN not in result.output


def test_status_reads_the_metrics_with_either_token(
    fake: FakeConvex, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Aggregate counts only: the operator token when set, else the worker token.
    result = run("status", "--json")
    assert result.exit_code == 0, result.output
    assert fake.calls[-1] == ("metrics:queue", {"token": OPERATOR})
    monkeypatch.delenv("OPERATOR_TOKEN")
    result = run("status", "--json")
    assert result.exit_code == 0, result.output
    assert fake.calls[-1] == ("metrics:queue", {"token": TOKEN})
    assert json.loads(result.stdout)["counts"] == {"pending": 1}


def test_status_needs_one_token_either_one(
    fake: FakeConvex, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("WORKER_TOKEN")
    result = run("status", "--json")
    assert result.exit_code == 0, result.output
    assert fake.calls[-1] == ("metrics:queue", {"token": OPERATOR})
    monkeypatch.delenv("OPERATOR_TOKEN")
    calls = len(fake.calls)
    result = run("status", "--json")
    assert result.exit_code == 2, result.output
    assert result.stderr.startswith(
        "fondation-worker: config error: OPERATOR_TOKEN or WORKER_TOKEN: one is required by "
    )
    assert len(fake.calls) == calls
