"""The REAL pinned ``claude`` CLI runs the real pipeline inside a real worker process.

Everything is real but the model: the dev backend (our convex/ functions), the loopback
HTTPS git server, the worker (``fondation-worker run``) and the pinned CLI binary, whose
tool calls write the docs. The model is the scripted Messages API
(tests/support/fakes/anthropic_api.py, tests/support/fakes/pipeline_model.py) on loopback.

Covered: the happy path (every step writes through real Write tool calls, the docs land in
Convex), each error class the worker tells apart (auth, usage limit with its reset time,
overloaded and server errors, max turns, budget) and a cancel in the middle of a step.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from fondation_worker.sandbox import landlock_abi
from tests.support import (
    SAMPLE_FILES,
    TEST_OPERATOR_TOKEN,
    DevBackend,
    WorkerProcess,
    enqueue,
    get_job,
    wait_status,
    wait_until,
)
from tests.support.fakes.anthropic_api import (
    ApiError,
    FakeAnthropic,
    Request,
    ToolUse,
    Turn,
    iter_tool_results,
    tool_result_text,
)
from tests.support.fakes.pipeline_model import PipelineModel, step_of
from tests.support.fakes.real_cli import NO_RETRY, require_real_claude

pytestmark = [pytest.mark.integration, pytest.mark.real_cli]

SANDBOX = "landlock" if landlock_abi() >= 1 else "off"
STEPS = ["abstractions", "relationships", "chapter_order", "chapters", "tutorials"]


@pytest.fixture(scope="module")
def repo_url(git_server: Any) -> str:
    return str(git_server.add_repo("realcli", "tiny", SAMPLE_FILES))


@pytest.fixture
def model() -> PipelineModel:
    return PipelineModel()


@pytest.fixture
def api(model: PipelineModel) -> Iterator[FakeAnthropic]:
    with FakeAnthropic(model) as server:
        yield server


@pytest.fixture
def real_worker(start_worker: Any, api: FakeAnthropic, dev_backend: DevBackend) -> Any:
    real = require_real_claude()

    def start(**env: str) -> WorkerProcess:
        values = {
            "CLAUDE_BIN": real,
            # The production setting: each step inside the Landlock sandbox.
            "CLAUDE_SANDBOX": SANDBOX,
            **api.env(),
            "STEP_TIMEOUT_MS": "90000",
            "JOB_TIMEOUT_MS": "240000",
            **env,
        }
        return start_worker(dev_backend, **values)  # type: ignore[no-any-return]

    return start


def step_results(api: FakeAnthropic, step: str) -> list[dict[str, Any]]:
    requests = [r for r in api.main_requests() if step_of(r) == step]
    return [block for _id, block in iter_tool_results(requests)]


def test_happy_path_real_cli_writes_every_doc_through_tool_calls(
    real_worker: Any, api: FakeAnthropic, dev_backend: DevBackend, repo_url: str
) -> None:
    worker = real_worker()
    job_id = enqueue(dev_backend, repo_url)
    job = wait_status(dev_backend, job_id, {"completed", "dead", "failed"}, 120)
    api.assert_protocol()
    assert job["status"] == "completed", job
    assert job["result"]["docsCount"] == 7
    assert "redactions" not in job["result"]
    with dev_backend.operator_client() as client:
        docs = client.call(
            "query", "docs:listByJob", {"token": TEST_OPERATOR_TOKEN, "jobId": job_id}
        )
        chapter = client.call(
            "query",
            "docs:getDoc",
            {"token": TEST_OPERATOR_TOKEN, "jobId": job_id, "slug": "chapters-02-main"},
        )
    assert {d["slug"] for d in docs} == {
        "abstractions",
        "relationships",
        "chapter-order",
        "index",
        "chapters-01-job",
        "chapters-02-main",
        "tutorials-01-first-run",
    }
    assert chapter["title"] == "Chapter 2: Main"
    for step in STEPS:
        results = step_results(api, step)
        # Turn 1 read the README, turn 2 wrote the files: every call succeeded in the CLI.
        assert results, f"no tool results for {step}"
        assert all(not r.get("is_error") for r in results), (step, results)
        assert any("Tiny" in tool_result_text(r) for r in results), step
        assert sum("File created successfully" in tool_result_text(r) for r in results) == len(
            PipelineModel().files[step]
        )
    # The CLI offered the model exactly the worker's tools and nothing that runs or fetches.
    offered = set(api.main_requests()[0].tools)
    assert {"Read", "Grep", "Glob", "Write"} <= offered
    assert not offered & {"Bash", "WebFetch", "WebSearch", "NotebookEdit", "Task", "Agent", "Edit"}
    worker.wait_event("job.completed")


def _reset_in(hours: int) -> datetime:
    return (datetime.now(UTC) + timedelta(hours=hours)).replace(second=0, microsecond=0)


RESET = _reset_in(3)

ERROR_CASES: dict[str, tuple[ApiError, str, str]] = {
    # name: (reply to the first step, errorKind stored, status the job goes to)
    "auth_401": (
        ApiError(401, "authentication_error", "invalid x-api-key", NO_RETRY),
        "auth",
        "pending",
    ),
    "usage_limit_429": (
        ApiError(
            429,
            "rate_limit_error",
            "You've hit your session limit · resets " + RESET.strftime("%Y-%m-%dT%H:%M:%SZ"),
            {**NO_RETRY, "retry-after": "10800"},
        ),
        "usage_limit",
        "pending",
    ),
    "overloaded_529": (
        ApiError(529, "overloaded_error", "Overloaded", NO_RETRY),
        "transient",
        "failed",
    ),
    "server_500": (
        ApiError(500, "api_error", "Internal server error", NO_RETRY),
        "transient",
        "failed",
    ),
}


@pytest.mark.parametrize("case", sorted(ERROR_CASES))
def test_api_errors_are_classified_through_the_real_cli(
    case: str,
    real_worker: Any,
    api: FakeAnthropic,
    model: PipelineModel,
    dev_backend: DevBackend,
    repo_url: str,
) -> None:
    reply, kind, status = ERROR_CASES[case]
    worker = real_worker(AUTH_RECHECK_MS="600000")
    wait_until(lambda: worker.get("/readyz").status_code == 200, 30)  # the probe passed
    model.override("abstractions", lambda _request: reply)
    job_id = enqueue(dev_backend, repo_url, max_attempts=3)
    wait_until(lambda: get_job(dev_backend, job_id).get("lastErrorKind") is not None, 60)
    api.assert_protocol()
    job = get_job(dev_backend, job_id)
    assert (job["lastErrorKind"], job["status"]) == (kind, status), job
    if kind in ("auth", "usage_limit"):
        assert job["attempts"] == 0  # not the job's fault: the attempt was given back
        assert worker.wait_event("worker.paused")["reason"] == kind
    else:
        assert job["attempts"] == 1
    if case == "usage_limit_429":
        # The job waits for the reset the API announced, not for a guessed backoff.
        assert abs(job["runAt"] / 1000 - RESET.timestamp()) < 120, job
    assert "/jobs/" not in job["lastError"]


def test_max_turns_ends_the_job_dead(
    real_worker: Any,
    api: FakeAnthropic,
    model: PipelineModel,
    dev_backend: DevBackend,
    repo_url: str,
) -> None:
    # A model that never stops calling tools: the CLI stops it at --max-turns.
    model.override("abstractions", lambda _r: Turn([ToolUse("Glob", {"pattern": "**/*"})]))
    real_worker(CLAUDE_MAX_TURNS="3")
    job_id = enqueue(dev_backend, repo_url)
    job = wait_status(dev_backend, job_id, {"dead", "completed", "failed"}, 60)
    api.assert_protocol()
    assert (job["status"], job["lastErrorKind"]) == ("dead", "permanent"), job
    assert "error_max_turns" in job["lastError"]


def test_budget_ends_the_job_dead(
    real_worker: Any,
    api: FakeAnthropic,
    model: PipelineModel,
    dev_backend: DevBackend,
    repo_url: str,
) -> None:
    # Every turn reports a large output: the CLI's cost estimate passes --max-budget-usd.
    model.override(
        "abstractions",
        lambda _r: Turn([ToolUse("Glob", {"pattern": "*"})], output_tokens=200_000),
    )
    real_worker(CLAUDE_MAX_BUDGET_USD="0.05")
    job_id = enqueue(dev_backend, repo_url)
    job = wait_status(dev_backend, job_id, {"dead", "completed", "failed"}, 60)
    api.assert_protocol()
    assert (job["status"], job["lastErrorKind"]) == ("dead", "permanent"), job
    assert "error_max_budget_usd" in job["lastError"]


def _claude_pids_of(job_id: str) -> list[int]:
    """Live processes whose environment says they run a step of this job."""
    needle = f"FONDATION_JOB_ID={job_id}".encode()
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if needle in (entry / "environ").read_bytes().split(b"\0"):
                pids.append(int(entry.name))
        except OSError:
            continue
    return pids


def test_cancel_in_the_middle_of_a_step_kills_the_real_cli(
    real_worker: Any,
    api: FakeAnthropic,
    model: PipelineModel,
    dev_backend: DevBackend,
    repo_url: str,
) -> None:
    waiting = threading.Event()
    release = threading.Event()

    def slow(request: Request) -> Turn:
        # The model "thinks" for a long time in the chapters step.
        waiting.set()
        release.wait(60)
        return Turn([ToolUse("Glob", {"pattern": "*"})])

    model.override("chapters", slow)
    worker = real_worker()
    job_id = enqueue(dev_backend, repo_url)
    try:
        assert waiting.wait(90), "the chapters step never called the API"
        pids = _claude_pids_of(job_id)
        assert pids, "no claude process runs the job's step"
        t0 = time.monotonic()
        with dev_backend.operator_client() as client:
            assert client.cancel(job_id).status == "running"
        job = wait_status(dev_backend, job_id, {"canceled"}, timeout=15)
        wait_until(lambda: not _claude_pids_of(job_id), 10, 0.05)
        heartbeat_s = int(worker.env["HEARTBEAT_MS"]) / 1000
        assert time.monotonic() - t0 < heartbeat_s + 5
        assert job["status"] == "canceled"
        worker.wait_event("job.canceled")
        jobs_dir = Path(worker.env["TEMP_DIR"], "jobs")
        wait_until(lambda: not any(jobs_dir.iterdir()), 10)
    finally:
        release.set()
    assert all(not os.path.exists(f"/proc/{pid}") for pid in pids)
