"""Health server: ``/healthz`` (the loop is alive), ``/readyz`` (reasons), ``/metrics``.

Readiness says whether this worker can do useful work now: Convex reachable with our
token, Claude authentication not known bad and no usage limit in force, enough disk, not
draining. Each problem is kept under a key with a human-readable reason.

/readyz also names the defence layers in force (``layers``: the CLI's confinement, Landlock
and its ABI, the document scan). Both JSON bodies also say what the replica is doing, for
`playbooks/status.yml`:
``version`` (the worker's), ``claude_cli_version`` (the pinned CLI's, from the image:
null outside it), ``worker_id``, ``current_job`` (the id of the job it has run
the longest, or null) and ``current_jobs`` (every job it runs, oldest first).
"""

from __future__ import annotations

import json
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST

from . import __version__
from .clock import Clock
from .logging_setup import get_logger
from .metrics import Metrics

log = get_logger(__name__)

DEFAULT_STALE_AFTER_S = 60.0
# The readiness reason while the start-up Claude check runs: /readyz then says
# ``"starting": true``, so `playbooks/status.yml` tells a replica still starting from one
# that is stuck.
STARTUP_CHECK_REASON = "checking Claude authentication at start"


class HealthState:
    def __init__(
        self,
        clock: Clock,
        metrics: Metrics,
        stale_after_s: float = DEFAULT_STALE_AFTER_S,
        *,
        worker_id: str | None = None,
        claude_cli_version: str | None = None,
        layers: dict[str, str] | None = None,
    ) -> None:
        self._clock = clock
        # The defence layers in force (claude_runner.defense_layers), reported by /readyz.
        self._layers = dict(layers or {})
        self._metrics = metrics
        self._lock = threading.Lock()
        self._stale_after_s = stale_after_s
        self._worker_id = worker_id
        self._claude_cli_version = claude_cli_version
        self._last_tick: float | None = None
        self._problems: dict[str, str] = {}
        # Degraded but still ready (the wake subscription is down: the worker polls).
        self._notices: dict[str, str] = {}
        self._draining = False
        self._jobs: dict[str, None] = {}  # running job ids, in claim order
        self._metrics.ready.set(0)

    def job_started(self, job_id: str) -> None:
        with self._lock:
            self._jobs[job_id] = None

    def job_finished(self, job_id: str) -> None:
        with self._lock:
            self._jobs.pop(job_id, None)

    def _identity(self) -> dict[str, Any]:
        """What this replica is and does (both bodies); call with the lock held."""
        jobs = list(self._jobs)
        return {
            "version": __version__,
            "claude_cli_version": self._claude_cli_version,
            "worker_id": self._worker_id,
            "current_job": jobs[0] if jobs else None,
            "current_jobs": jobs,
        }

    def tick(self) -> None:
        with self._lock:
            self._last_tick = self._clock.monotonic()
        self._metrics.last_tick.set(self._clock.time())
        self._update_gauge()

    def set_problem(self, key: str, reason: str) -> bool:
        """Record a readiness problem; returns True if it is new or changed."""
        with self._lock:
            changed = self._problems.get(key) != reason
            self._problems[key] = reason
        self._update_gauge()
        return changed

    def clear_problem(self, key: str) -> bool:
        with self._lock:
            had = self._problems.pop(key, None) is not None
        self._update_gauge()
        return had

    def set_notice(self, key: str, reason: str) -> None:
        """Something /readyz reports without making the worker unready."""
        with self._lock:
            self._notices[key] = reason

    def clear_notice(self, key: str) -> bool:
        with self._lock:
            return self._notices.pop(key, None) is not None

    def problem(self, key: str) -> str | None:
        with self._lock:
            return self._problems.get(key)

    def set_draining(self) -> None:
        with self._lock:
            self._draining = True
        self._update_gauge()

    def _update_gauge(self) -> None:
        self._metrics.ready.set(1 if self.readiness()[0] else 0)

    def liveness(self) -> tuple[bool, dict[str, Any]]:
        with self._lock:
            last = self._last_tick
            identity = self._identity()
        if last is None:
            return False, {"status": "starting", **identity}
        age = self._clock.monotonic() - last
        alive = age <= self._stale_after_s
        return alive, {
            "status": "ok" if alive else "stale",
            "last_tick_age_s": round(age, 3),
            **identity,
        }

    def readiness(self) -> tuple[bool, dict[str, Any]]:
        alive, live = self.liveness()
        with self._lock:
            problems = dict(self._problems)
            notices = dict(self._notices)
            draining = self._draining
            identity = self._identity()
        reasons = [f"{key}: {reason}" for key, reason in sorted(problems.items())]
        if draining:
            reasons.append("draining: the worker is shutting down")
        if not alive:
            reasons.append(f"loop: {live['status']}")
        ready = not reasons
        checks = {
            "convex": "convex" not in problems,
            "claude": "claude" not in problems,
            "disk": "disk" not in problems,
            "loop": alive,
            "draining": draining,
            "wakeup": "wakeup" not in notices,
        }
        starting = not alive and live["status"] == "starting"
        starting = starting or problems.get("claude") == STARTUP_CHECK_REASON
        return ready, {
            "ready": ready,
            "starting": starting and not ready,
            "reasons": reasons,
            "degraded": [f"{key}: {reason}" for key, reason in sorted(notices.items())],
            "checks": checks,
            "layers": dict(self._layers),
            **identity,
        }


class _Server6(ThreadingHTTPServer):
    address_family = socket.AF_INET6


class HealthServer:
    """A tiny threaded HTTP server; started and stopped by the CLI."""

    def __init__(self, host: str, port: int, state: HealthState, metrics: Metrics) -> None:
        state_ref, metrics_ref = state, metrics

        class Handler(BaseHTTPRequestHandler):
            server_version = "fondation-worker"
            sys_version = ""

            def do_GET(self) -> None:
                path = self.path.split("?", 1)[0]
                if path == "/healthz":
                    ok, body = state_ref.liveness()
                    self._json(200 if ok else 503, body)
                elif path == "/readyz":
                    ok, body = state_ref.readiness()
                    self._json(200 if ok else 503, body)
                elif path == "/metrics":
                    self._send(200, CONTENT_TYPE_LATEST, metrics_ref.render())
                else:
                    self._json(404, {"error": "not found"})

            def _json(self, status: int, body: dict[str, Any]) -> None:
                self._send(status, "application/json", json.dumps(body).encode() + b"\n")

            def _send(self, status: int, content_type: str, data: bytes) -> None:
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(data)))
                self.send_header("Cache-Control", "no-store")
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:
                log.debug("health.request", line=format % args)

        server_cls = _Server6 if ":" in host else ThreadingHTTPServer
        self._server = server_cls((host, port), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="health", daemon=True
        )

    @property
    def address(self) -> tuple[str, int]:
        host, port = self._server.server_address[:2]
        return str(host), int(port)

    def start(self) -> None:
        self._thread.start()
        log.info("health.listening", host=self.address[0], port=self.address[1])

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
