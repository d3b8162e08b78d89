"""The stuck-jobs runbook's commands against the dev backend (our real convex/ functions):
a worker killed with SIGKILL leaves its job running with an expired lease; ``stuck`` lists
it, ``reclaim`` brings it back, and once it ended dead as a poison job, ``requeue --yes``
queues it again and a healthy worker completes it.

This dev backend's reclaim cron is slowed to once an hour so that only the operator's
``reclaim`` moves the job (the session backend reclaims every second).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support import (
    FAKE_CLAUDE,
    SAMPLE_FILES,
    SHORT_LEASE,
    TEST_OPERATOR_TOKEN,
    TEST_WORKER_TOKEN,
    WORKER_BIN,
    DevBackend,
    enqueue,
    get_job,
    read_claude_log,
    start_dev_backend,
    wait_status,
    wait_until,
)

pytestmark = pytest.mark.integration


@pytest.fixture
def slow_cron_backend(tmp_path: Path, git_server: Any) -> Iterator[DevBackend]:
    backend = start_dev_backend(tmp_path, f"github.com,{git_server.host}", reclaim_ms=3_600_000)
    yield backend
    backend.stop()


def cli(backend: DevBackend, tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {
        "PATH": os.environ["PATH"],
        "HOME": str(tmp_path),
        "CONVEX_URL": backend.url,
        "WORKER_TOKEN": TEST_WORKER_TOKEN,
        "OPERATOR_TOKEN": TEST_OPERATOR_TOKEN,  # the operator commands' credential
        "TEMP_DIR": str(tmp_path / "cli-tmp"),
        "CLAUDE_BIN": str(FAKE_CLAUDE),
        "JOB_TIMEOUT_MS": "600000",
        "STEP_TIMEOUT_MS": "300000",
        "CLONE_TIMEOUT_MS": "300000",
    }
    return subprocess.run(
        [str(WORKER_BIN), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def stuck_json(backend: DevBackend, tmp_path: Path, *extra: str) -> list[dict[str, Any]]:
    proc = cli(backend, tmp_path, "stuck", "--json", *extra)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    value = json.loads(proc.stdout)
    assert isinstance(value, list)
    return value


def kill_hanging_claude(log: Path, job_id: str) -> None:
    for entry in read_claude_log(log):
        if entry["event"] == "hang" and entry["job"] == job_id:
            for pid in (entry["pid"], entry["child_pid"]):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)


def test_stuck_reclaim_and_requeue_after_a_worker_was_killed(
    slow_cron_backend: DevBackend,
    start_worker: Any,
    git_server: Any,
    tmp_path: Path,
    fake_claude_log: Path,
) -> None:
    backend = slow_cron_backend
    repo = git_server.add_repo("stuck", "widgets", SAMPLE_FILES)
    first = start_worker(backend, "doomed", FAKE_CLAUDE_MODE="hang@chapters", **SHORT_LEASE)
    job_id = enqueue(backend, repo, branch="main", max_attempts=2)
    wait_until(
        lambda: any(
            e["event"] == "hang" and e["job"] == job_id for e in read_claude_log(fake_claude_log)
        ),
        60,
    )
    # The replica says which job it runs and which version it is (playbooks/status.yml).
    for path in ("/healthz", "/readyz"):
        body = first.get(path).json()
        assert body["current_job"] == job_id
        assert body["current_jobs"] == [job_id]
        assert body["worker_id"] == first.env["WORKER_ID"]
        assert body["version"]
    # Alive and heartbeating: not stuck (JOB_TIMEOUT_MS of the CLI is 10 min).
    assert stuck_json(backend, tmp_path) == []

    first.kill9()
    kill_hanging_claude(fake_claude_log, job_id)
    lease_s = int(first.env["LEASE_MS"]) / 1000
    listed = wait_until(lambda: stuck_json(backend, tmp_path), lease_s + 30, 0.5)
    assert listed == [
        {
            "jobId": job_id,
            "status": "running",
            "why": "lease_expired",
            "attempts": 1,
            "maxAttempts": 2,
            "workerId": first.env["WORKER_ID"],
            "leaseExpiresAt": listed[0]["leaseExpiresAt"],
            "startedAt": listed[0]["startedAt"],
            "repoUrl": repo,
            "branch": "main",
            "cancelRequested": False,
        }
    ]
    assert listed[0]["startedAt"] < listed[0]["leaseExpiresAt"]
    # The same job has also run longer than a 1 ms threshold: still reported once.
    assert [j["why"] for j in stuck_json(backend, tmp_path, "--running-longer-than", "1")] == [
        "lease_expired"
    ]
    table = cli(backend, tmp_path, "stuck")
    assert table.returncode == 0
    assert table.stdout.startswith("1 stuck job(s)")
    assert job_id in table.stdout
    assert "lease expired" in table.stdout
    assert TEST_WORKER_TOKEN not in table.stdout + table.stderr
    assert TEST_OPERATOR_TOKEN not in table.stdout + table.stderr

    reclaimed = cli(backend, tmp_path, "reclaim", "--json")
    assert reclaimed.returncode == 0, reclaimed.stderr
    assert json.loads(reclaimed.stdout) == {
        "moved": 1,
        "dead": 0,
        "canceled": 0,
        "more": False,
        "jobs": [{"jobId": job_id, "outcome": "pending"}],
    }
    job = get_job(backend, job_id)
    assert (job["status"], job["attempts"], job["lastErrorKind"]) == (
        "pending",
        1,
        "lease_expired",
    )
    assert stuck_json(backend, tmp_path) == []
    again = cli(backend, tmp_path, "reclaim")
    assert (again.returncode, again.stdout.strip()) == (0, "no expired leases: nothing to reclaim")

    # A requeue is refused while the job is not dead.
    refused = cli(backend, tmp_path, "requeue", job_id, "--yes")
    assert refused.returncode == 3
    assert refused.stderr.strip() == (
        f"fondation-worker: job {job_id} is pending: only a dead job can be requeued"
    )

    # Its second and last attempt crashes: a poison job, dead.
    crasher = start_worker(backend, "crasher", FAKE_CLAUDE_MODE="crash")
    job = wait_status(backend, job_id, {"dead", "completed"}, timeout=90)
    assert (job["status"], job["attempts"], job["lastErrorKind"]) == ("dead", 2, "transient")
    crasher.stop()

    asked = cli(backend, tmp_path, "requeue", job_id)
    assert asked.returncode == 1
    assert f"job       {job_id}" in asked.stdout
    assert "status    dead" in asked.stdout
    assert asked.stdout.splitlines()[-1] == "re-run with --yes to requeue"
    assert get_job(backend, job_id)["status"] == "dead"

    done = cli(backend, tmp_path, "requeue", job_id, "--yes")
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[-1] == f"job {job_id} requeued: pending, attempts reset to 0/2"
    job = get_job(backend, job_id)
    assert (job["status"], job["attempts"], job["lastErrorKind"]) == ("pending", 0, "transient")
    assert job["requeues"][0]["lastErrorKind"] == "transient"
    assert "RuntimeError: boom" in job["requeues"][0]["lastError"]
    with backend.client() as client:
        counts = client.queue_metrics()["counts"]
    assert (counts["dead"], counts["pending"]) == (0, 1)

    start_worker(backend, "healthy")
    job = wait_status(backend, job_id, {"completed", "dead"}, timeout=90)
    assert (job["status"], job["attempts"]) == ("completed", 1)
