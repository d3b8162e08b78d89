"""Eight concurrent claimers against the dev backend over HTTP: every job claimed once.

Self-contained (httpx + stdlib): starts ``devbackend/server.ts`` with tsx on a free port,
enqueues 50 jobs with the operator token, runs 8 claimer threads (each offers its slot and
polls for the job the dispatcher assigns it, each claim retried once with the same
requestId, as after a lost reply: the same claim, lease renewed) until every job is done,
completes each one offering its slot back, and checks that each job was claimed exactly
once and ended completed.
"""

from __future__ import annotations

import collections
import os
import secrets
import shutil
import signal
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

pytestmark = pytest.mark.integration

REPO_ROOT = Path(__file__).resolve().parents[2]
SERVER = REPO_ROOT / "devbackend" / "server.ts"
TSX = REPO_ROOT / "node_modules" / ".bin" / "tsx"
JOBS = 50
CLAIMERS = 8


@dataclass
class Backend:
    url: str
    token: str  # WORKER_TOKEN: the claimers
    operator_token: str  # OPERATOR_TOKEN: enqueue and jobs:get
    log_path: Path


class FunctionError(Exception):
    def __init__(self, path: str, message: str, data: Any) -> None:
        super().__init__(f"{path}: {message} {data!r}")
        self.data = data


def call(client: httpx.Client, backend: Backend, kind: str, path: str, args: dict[str, Any]) -> Any:
    response = client.post(
        f"{backend.url}/api/{kind}", json={"path": path, "args": args, "format": "json"}
    )
    assert response.status_code == 200, f"{path}: HTTP {response.status_code} {response.text}"
    body = response.json()
    if body["status"] != "success":
        raise FunctionError(path, body.get("errorMessage", ""), body.get("errorData"))
    return body["value"]


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def backend(tmp_path: Path) -> Iterator[Backend]:
    if shutil.which("node") is None or not TSX.exists():
        pytest.fail("node and node_modules/.bin/tsx are needed (run npm ci)")
    port = _free_port()
    token = secrets.token_urlsafe(24)
    operator_token = secrets.token_urlsafe(24)
    log_path = tmp_path / "devbackend.log"
    env = {
        **os.environ,
        "WORKER_TOKEN": token,
        "OPERATOR_TOKEN": operator_token,
        "ALLOWED_REPO_HOSTS": "github.com",
        "DEV_BACKEND_HOST": "127.0.0.1",
        "DEV_BACKEND_PORT": str(port),
        "RECLAIM_INTERVAL_MS": "60000",
    }
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [str(TSX), str(SERVER)],
            cwd=REPO_ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            if process.poll() is not None:
                pytest.fail(f"dev backend exited ({process.returncode}):\n{log_path.read_text()}")
            try:
                health = httpx.get(f"{url}/health", timeout=1)
                if health.status_code == 200 and health.json() == {"ok": True}:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"dev backend not healthy within 60 s:\n{log_path.read_text()}")
            time.sleep(0.2)
        yield Backend(url, token, operator_token, log_path)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(10)


def test_concurrent_claimers_claim_every_job_exactly_once(backend: Backend) -> None:
    started = time.monotonic()
    with httpx.Client(timeout=30) as client:
        enqueued = [
            call(
                client,
                backend,
                "mutation",
                "jobs:enqueue",
                {"token": backend.operator_token, "repoUrl": f"https://github.com/acme/repo-{i}"},
            )["jobId"]
            for i in range(JOBS)
        ]
    assert len(set(enqueued)) == JOBS

    claims: list[tuple[str, str]] = []  # (jobId, claimer)
    lock = threading.Lock()
    errors: list[BaseException] = []
    barrier = threading.Barrier(CLAIMERS)

    done = threading.Event()

    def claimer(n: int) -> None:
        worker_id = f"claimer-{n}"
        try:
            with httpx.Client(timeout=30) as client:
                barrier.wait()
                while not done.is_set():
                    args = {
                        "token": backend.token,
                        "workerId": worker_id,
                        "leaseMs": 600_000,
                        "requestId": str(uuid.uuid4()),
                    }
                    # offers the slot, or accepts the job the dispatcher assigned to it
                    job = call(client, backend, "mutation", "jobs:claimOne", args)
                    if job is None:
                        time.sleep(0.05)
                        continue
                    # a retried call (lost reply) must return the same claim, not a new one;
                    # only its lease is renewed (from the repeated request, never shortened)
                    again = call(client, backend, "mutation", "jobs:claimOne", args)
                    same = {**again, "leaseUntil": 0} == {**job, "leaseUntil": 0}
                    assert same, f"{worker_id}: repeated requestId changed the claim"
                    assert again["leaseUntil"] >= job["leaseUntil"]
                    with lock:
                        claims.append((job["jobId"], worker_id))
                    fenced = {
                        "token": backend.token,
                        "jobId": job["jobId"],
                        "leaseToken": job["leaseToken"],
                    }
                    call(client, backend, "mutation", "jobs:start", fenced)
                    call(
                        client,
                        backend,
                        "mutation",
                        "jobs:complete",
                        {
                            **fenced,
                            "runId": f"run-{n}",
                            "summary": {"docsCount": 0, "durationMs": 1},
                            "offer": {"slot": 0, "acceptMs": 30_000},
                        },
                    )
                    with lock:
                        if len(claims) == JOBS:
                            done.set()
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)
            done.set()

    threads = [threading.Thread(target=claimer, args=(n,), daemon=True) for n in range(CLAIMERS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert not any(t.is_alive() for t in threads), "claimers did not finish within 120 s"
    assert not errors, f"claimer errors: {errors!r}"

    per_job = collections.Counter(job_id for job_id, _ in claims)
    duplicates = {job_id: n for job_id, n in per_job.items() if n != 1}
    per_claimer = collections.Counter(worker for _, worker in claims)
    elapsed = time.monotonic() - started

    with httpx.Client(timeout=30) as client:
        metrics = call(client, backend, "query", "metrics:queue", {"token": backend.token})
        statuses = collections.Counter(
            call(
                client,
                backend,
                "query",
                "jobs:get",
                {"token": backend.operator_token, "jobId": job_id},
            )["status"]
            for job_id in enqueued
        )

    print(
        f"\ndevbackend claims: {JOBS} jobs, {CLAIMERS} claimers, {len(claims)} claims, "
        f"{len(duplicates)} claimed twice, {JOBS - len(per_job)} never claimed, "
        f"per claimer {dict(sorted(per_claimer.items()))}, statuses {dict(statuses)}, "
        f"{elapsed:.1f} s"
    )

    assert duplicates == {}
    assert set(per_job) == set(enqueued)
    assert len(claims) == JOBS
    assert statuses == {"completed": JOBS}
    assert metrics["counts"]["completed"] == JOBS
    assert metrics["ready"] == 0
    assert metrics["inProgress"] == 0
    # concurrency was real: more than one claimer got work
    assert len(per_claimer) > 1

    # the backend logs one line per request and never the arguments (they carry tokens)
    log_text = backend.log_path.read_text()
    assert backend.token not in log_text
    assert backend.operator_token not in log_text
    assert "leaseToken" not in log_text
    assert "jobs:claimOne success" in log_text


def test_refusals_over_http(backend: Backend) -> None:
    """Wrong token, internal functions and malformed requests, as the worker sees them."""
    with httpx.Client(timeout=30) as client:
        with pytest.raises(FunctionError) as wrong:
            call(
                client,
                backend,
                "mutation",
                "jobs:claimOne",
                {"token": "wrong", "workerId": "w", "leaseMs": 10_000, "requestId": "r"},
            )
        assert wrong.value.data == {"code": "UNAUTHORIZED", "message": "unauthorized"}

        with pytest.raises(FunctionError) as internal:
            call(client, backend, "mutation", "jobs:reclaimExpired", {})
        assert internal.value.data is None
        assert "Could not find public function" in str(internal.value)

        bad = client.post(f"{backend.url}/api/mutation", content=b"{not json")
        assert bad.status_code == 400

        with pytest.raises(FunctionError) as invalid:
            call(
                client,
                backend,
                "mutation",
                "jobs:enqueue",
                {
                    "token": backend.operator_token,
                    "repoUrl": "ext::sh -c id",
                    "branch": "--upload-pack=x",
                },
            )
        assert invalid.value.data["code"] == "INVALID_ARGUMENT"
