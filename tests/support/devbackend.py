"""The local Convex dev backend (devbackend/server.ts: our real convex/ functions under
convex-test) as a child process on a port of its own, for the tests, bench and chaos.

`scripts/devbackend.sh` is the shell way (a long-lived daemon on 3210 for `make deploy` and
Molecule); this is the in-process way: the caller owns the process and stops it.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from pydantic import SecretStr

from fondation_worker.convex_client import ConvexClient
from fondation_worker.models import ClaimedJob

from .paths import (
    DEV_BACKEND,
    REPO_ROOT,
    TEST_OPERATOR_TOKEN,
    TEST_SCRAPE_TOKEN,
    TEST_WORKER_TOKEN,
    TSX,
)
from .waiting import free_port, wait_until


class DevBackendError(RuntimeError):
    """The dev backend is missing, exited, or did not become healthy."""


@dataclass
class DevBackend:
    url: str
    port: int
    process: subprocess.Popen[bytes]
    log_path: Path
    allowed_hosts: str
    worker_token: SecretStr = field(default_factory=lambda: SecretStr(TEST_WORKER_TOKEN))
    operator_token: SecretStr = field(default_factory=lambda: SecretStr(TEST_OPERATOR_TOKEN))
    client_timeout_s: float = 5

    def client(self, **kwargs: Any) -> ConvexClient:
        """A client with the worker token: the worker functions and the queue metrics."""
        return ConvexClient(self.url, self.worker_token, timeout_s=self.client_timeout_s, **kwargs)

    def operator_client(self, **kwargs: Any) -> ConvexClient:
        """A client with the operator token: enqueue, get, cancel, docs reads, operator:*."""
        return ConvexClient(
            self.url, self.operator_token, timeout_s=self.client_timeout_s, **kwargs
        )

    def alive(self) -> bool:
        return self.process.poll() is None

    # --- the admin endpoints (DEV_BACKEND_ADMIN=1) ---------------------------------------

    def admin(self, path: str, body: dict[str, Any] | None = None) -> Any:
        reply = httpx.post(f"{self.url}/_dev/{path}", json=body or {}, timeout=10)
        reply.raise_for_status()
        return reply.json()

    def reset(self) -> None:
        self.admin("reset")

    def pause(self, mode: str = "reset") -> None:
        self.admin("pause", {"mode": mode})

    def resume(self) -> None:
        self.admin("resume")

    def dump(self, table: str, limit: int | None = None) -> list[dict[str, Any]]:
        params: dict[str, Any] = {"table": table}
        if limit is not None:
            params["limit"] = limit
        reply = httpx.get(f"{self.url}/_dev/dump", params=params, timeout=20)
        reply.raise_for_status()
        data = reply.json()
        rows = data if isinstance(data, list) else data.get("rows", data.get(table, []))
        return rows

    # --- jobs, as the operator sees them -------------------------------------------------

    def enqueue(self, url: str, **kwargs: Any) -> str:
        with self.operator_client() as client:
            reply = client.enqueue(url, **kwargs)
        return reply.job_id

    def job(self, job_id: str) -> dict[str, Any]:
        token = self.operator_token.get_secret_value()
        with self.operator_client() as client:
            value = client.call("query", "jobs:get", {"token": token, "jobId": job_id})
        assert isinstance(value, dict), f"job {job_id} not found"
        return value

    def wait_status(self, job_id: str, statuses: set[str], timeout: float = 60) -> dict[str, Any]:
        last: dict[str, Any] = {}

        def check() -> dict[str, Any] | None:
            nonlocal last
            last = self.job(job_id)
            return last if last["status"] in statuses else None

        try:
            return wait_until(check, timeout, 0.2)  # type: ignore[no-any-return]
        except AssertionError:
            raise AssertionError(
                f"job {job_id} not in {statuses} within {timeout} s: {last}"
            ) from None

    def lose_replies(self, path: str, count: int) -> None:
        """The next ``count`` calls of ``path`` are applied and their replies lost."""
        self.admin("lose-replies", {"path": path, "count": count})

    def stats(self) -> dict[str, Any]:
        """What Convex would have met (/_dev/stats): calls, conflicts, hot documents."""
        reply = httpx.get(f"{self.url}/_dev/stats", timeout=10)
        reply.raise_for_status()
        stats: dict[str, Any] = reply.json()
        return stats

    def offer_slot(self, worker_id: str, slot: int = 0) -> None:
        """Offer ``worker_id``'s slot for dispatch (a claim that finds nothing assigned)."""
        with self.client() as client:
            job = client.claim_one(worker_id, 60_000, slots=(slot,))
        assert job is None, f"{worker_id}'s slot {slot} held an assignment already"

    def assigned_to(self, worker_id: str, job_id: str, timeout: float = 20) -> None:
        """Offer ``worker_id``'s slot 0 and wait until the dispatcher assigns ``job_id`` to it."""
        self.offer_slot(worker_id)
        job = self.wait_status(job_id, {"assigned"}, timeout)
        assert job["lockedBy"] == worker_id, f"{job_id} went to {job['lockedBy']}"

    # --- the process ---------------------------------------------------------------------

    def stop(self) -> None:
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(10)

    def log_tail(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-4000:]
        except OSError:
            return ""


def start_dev_backend(
    directory: Path,
    allowed_hosts: str,
    reclaim_ms: int | None = 1000,
    port: int | None = None,
    extra_env: dict[str, str] | None = None,
    *,
    host: str = "127.0.0.1",
    worker_token: str = TEST_WORKER_TOKEN,
    operator_token: str = TEST_OPERATOR_TOKEN,
    admin: bool = True,
    log_path: Path | None = None,
    timeout_s: float = 60,
    client_timeout_s: float = 5,
) -> DevBackend:
    """Start a dev backend on ``host``:``port`` (a free one by default) and wait until it
    answers /health. ``reclaim_ms=None`` keeps the backend's own reclaim schedule;
    ``admin`` opens the /_dev endpoints (reset, pause, dump)."""
    if not DEV_BACKEND.exists():
        raise DevBackendError(f"{DEV_BACKEND} does not exist: the harness needs the dev backend")
    if not TSX.exists():
        raise DevBackendError(f"{TSX} does not exist: run `make deps`")
    port = port or free_port(host)
    log_path = log_path or directory / f"devbackend-{port}.log"
    env = {
        **os.environ,
        "WORKER_TOKEN": worker_token,
        "OPERATOR_TOKEN": operator_token,
        "METRICS_SCRAPE_TOKEN": TEST_SCRAPE_TOKEN,
        "ALLOWED_REPO_HOSTS": allowed_hosts,
        "DEV_BACKEND_HOST": host,
        "DEV_BACKEND_PORT": str(port),
        # Killed before its teardown (a timeout), this process still takes the backend along.
        "DEV_BACKEND_OWNER_PID": str(os.getpid()),
    }
    if reclaim_ms is not None:
        env["RECLAIM_INTERVAL_MS"] = str(reclaim_ms)
    if admin:
        env["DEV_BACKEND_ADMIN"] = "1"
    env.update(extra_env or {})
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [str(TSX), str(DEV_BACKEND)],
            cwd=REPO_ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    backend = DevBackend(
        f"http://{host}:{port}",
        port,
        process,
        log_path,
        allowed_hosts,
        SecretStr(worker_token),
        SecretStr(operator_token),
        client_timeout_s,
    )
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise DevBackendError(
                f"dev backend exited with {process.returncode}:\n{backend.log_tail()}"
            )
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{backend.url}/health", timeout=1).status_code == 200:
                return backend
        time.sleep(0.2)
    backend.stop()
    raise DevBackendError(f"dev backend not healthy within {timeout_s} s:\n{backend.log_tail()}")


def claim(
    client: ConvexClient, worker_id: str = "w1", lease_ms: int = 60_000, timeout: float = 20
) -> ClaimedJob:
    """A worker's claim as the worker makes it: offer slot 0, then accept the job the
    dispatcher assigns to it (the dispatcher runs a moment after the offer or the enqueue)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = client.claim_one(worker_id, lease_ms)
        if job is not None:
            return job
        time.sleep(0.05)
    raise AssertionError(f"no job assigned to {worker_id} within {timeout} s")


def get_job(backend: DevBackend, job_id: str) -> dict[str, Any]:
    return backend.job(job_id)


def wait_status(
    backend: DevBackend, job_id: str, statuses: set[str], timeout: float = 60
) -> dict[str, Any]:
    return backend.wait_status(job_id, statuses, timeout)


def enqueue(backend: DevBackend, url: str, **kwargs: Any) -> str:
    return backend.enqueue(url, **kwargs)
