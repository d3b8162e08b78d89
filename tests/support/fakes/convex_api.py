"""A fake of Convex's HTTP API for the operator commands of ``fondation-worker``, in memory.

It answers ``POST /api/query|mutation`` bodies (``{"path", "args"}``) as convex/ does for the
functions the CLI calls, with Convex's reply envelope (``status``, ``value`` or
``errorMessage`` and ``errorData``), and records every call:

- ``metrics:queue`` takes the worker or the operator token; every other function only the
  operator's (``UNAUTHORIZED`` otherwise), as convex/lib/auth.ts decides;
- ``jobs:enqueue`` reuses the active job of a ``dedupeKey``; ``jobs:get``, ``jobs:cancel``,
  ``operator:listStuck``, ``operator:reclaimNow`` and ``operator:requeue`` answer from
  ``jobs``, ``stuck`` and ``reclaim``; ``requeue_error`` makes ``operator:requeue`` refuse;
- ``down`` makes every call fail to connect.

``install`` points the CLI at it: the real ``assembly.connect`` picks the token, only the
transport is faked. The real functions are covered by the vitest suites and, over HTTP, by
tests/worker/test_stuck_jobs.py against the dev backend.
"""

from __future__ import annotations

import functools
import json
from typing import Any

import httpx
import pytest

from fondation_worker import assembly
from fondation_worker.contract import LEASED_STATUSES, QUEUED_STATUSES
from fondation_worker.convex_client import ConvexClient


class FakeConvex:
    def __init__(self, worker_token: str, operator_token: str, now_ms: float) -> None:
        self.worker_token = worker_token
        self.operator_token = operator_token
        self.now_ms = now_ms
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.metrics: dict[str, Any] = {"counts": {"pending": 1}, "now": now_ms}
        self.jobs: dict[str, dict[str, Any]] = {}
        self.active: dict[str, str] = {}  # dedupeKey -> jobId
        self.stuck: list[dict[str, Any]] = []
        self.reclaim: dict[str, Any] = {
            "moved": 0,
            "dead": 0,
            "canceled": 0,
            "more": False,
            "jobs": [],
        }
        self.requeue_error: dict[str, str] | None = None
        self.down = False

    def install(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """Every ConvexClient the CLI builds talks to this fake."""
        monkeypatch.setattr(
            assembly,
            "ConvexClient",
            functools.partial(
                ConvexClient, transport=httpx.MockTransport(self.handle), sleep=lambda _s: None
            ),
        )

    def paths(self) -> list[str]:
        return [path for path, _ in self.calls]

    def handle(self, request: httpx.Request) -> httpx.Response:
        if self.down:
            raise httpx.ConnectError("connection refused")
        body = json.loads(request.content)
        path, args = body["path"], body["args"]
        self.calls.append((path, args))
        allowed = {self.operator_token}
        if path == "metrics:queue":
            allowed.add(self.worker_token)
        if args.get("token") not in allowed:
            return self.error("UNAUTHORIZED", "unauthorized")
        match path:
            case "metrics:queue":
                return self.ok(self.metrics)
            case "jobs:enqueue":
                return self.ok(self._enqueue(args.get("dedupeKey")))
            case "jobs:get":
                return self.ok(self.jobs.get(args["jobId"]))
            case "jobs:cancel":
                return self._cancel(args["jobId"])
            case "operator:listStuck":
                return self.ok(self.stuck)
            case "operator:reclaimNow":
                return self.ok(self.reclaim)
            case "operator:requeue":
                return self._requeue(args["jobId"])
        return self.error(None, f"Could not find public function for '{path}'")

    def _enqueue(self, key: str | None) -> dict[str, Any]:
        if key is not None and key in self.active:
            return {"jobId": self.active[key], "created": False}
        job_id = f"j-new-{len(self.calls)}"
        if key is not None:
            self.active[key] = job_id
        return {"jobId": job_id, "created": True}

    def _cancel(self, job_id: str) -> httpx.Response:
        job = self.jobs.get(job_id)
        if job is None:
            return self.error("NOT_FOUND", "no such job")
        if job["status"] in QUEUED_STATUSES:
            job.update(status="canceled", cancelRequested=True)
        elif job["status"] in LEASED_STATUSES:
            job.update(cancelRequested=True)
        return self.ok({"status": job["status"]})

    def _requeue(self, job_id: str) -> httpx.Response:
        if self.requeue_error is not None:
            return self.error(self.requeue_error["code"], self.requeue_error["message"])
        job = self.jobs[job_id]
        job.update(
            status="pending",
            attempts=0,
            requeues=[{"at": self.now_ms, "attempts": 2, "deferrals": 0}],
        )
        return self.ok(job)

    @staticmethod
    def ok(value: Any) -> httpx.Response:
        return httpx.Response(200, json={"status": "success", "value": value, "logLines": []})

    @staticmethod
    def error(code: str | None, message: str) -> httpx.Response:
        body: dict[str, Any] = {"status": "error", "errorMessage": message, "logLines": []}
        if code is not None:
            body["errorData"] = {"code": code, "message": message}
        return httpx.Response(200, json=body)
