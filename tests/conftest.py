"""Shared fixtures: settings, the fake claude, the loopback git server, the dev backend and
worker processes.

The dev backend fixture FAILS (never skips) when devbackend/server.ts is missing or does not
become healthy: integration tests must not pass by not running.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

from fondation_worker.config import Settings
from fondation_worker.convex_client import ConvexClient

REPO_ROOT = Path(__file__).resolve().parent.parent
FAKES = Path(__file__).resolve().parent / "fakes"
FAKE_CLAUDE = FAKES / "claude"
VENV_BIN = Path(sys.executable).parent
WORKER_BIN = VENV_BIN / "fondation-worker"
DEV_BACKEND = REPO_ROOT / "devbackend" / "server.ts"
TSX = REPO_ROOT / "node_modules" / ".bin" / "tsx"

TEST_WORKER_TOKEN = "test-worker-token-" + "0123456789abcdef"
# The dev backend's OPERATOR_TOKEN: the only credential its operator functions accept
# (enqueue/get/list/cancel with a token, docs reads, operator:*). The worker token has none.
TEST_OPERATOR_TOKEN = "test-operator-token-" + "fedcba9876543210"

# The lease of tests whose subject is lease expiry (kill -9, a frozen or cut-off worker).
# Every other test runs with a lease that outlasts the multi-second I/O stalls of a busy CI
# machine (Molecule imports images beside the unit stage): a 3 s lease lost in such a stall
# is a real fence, and it failed a test about something else.
SHORT_LEASE = {"LEASE_MS": "3000", "HEARTBEAT_MS": "500"}


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until(predicate: Callable[[], Any], timeout: float, interval: float = 0.1) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s")
        time.sleep(interval)


def make_settings(**overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "convex_url": "http://127.0.0.1:9",
        "worker_token": TEST_WORKER_TOKEN,
        "worker_id": "test-worker",
        "allowed_repo_hosts": ["github.com"],
        "claude_bin": str(FAKE_CLAUDE),
        "min_free_disk_mb": 0,
    }
    values.update(overrides)
    return Settings(**values)


@pytest.fixture
def settings_factory(tmp_path: Path) -> Callable[..., Settings]:
    def factory(**overrides: Any) -> Settings:
        overrides.setdefault("temp_dir", tmp_path / "work")
        return make_settings(**overrides)

    return factory


# --- git server ------------------------------------------------------------------------


@pytest.fixture(scope="session")
def git_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    from fakes.git_server import GitServer

    server = GitServer(tmp_path_factory.mktemp("git-server"))
    server.start()
    yield server
    server.stop()


SAMPLE_FILES = {
    "README.md": "# Tiny\n\nA tiny project.\n",
    "main.py": "def main():\n    print('hi')\n",
    "pkg/job.py": "class Job:\n    pass\n",
}


# --- dev backend -----------------------------------------------------------------------


@dataclass
class DevBackend:
    url: str
    port: int
    process: subprocess.Popen[bytes]
    log_path: Path
    allowed_hosts: str

    def client(self, **kwargs: Any) -> ConvexClient:
        """A client with the worker token: the worker functions and the queue metrics."""
        return ConvexClient(self.url, SecretStr(TEST_WORKER_TOKEN), timeout_s=5, **kwargs)

    def operator_client(self, **kwargs: Any) -> ConvexClient:
        """A client with the operator token: enqueue, get, cancel, docs reads, operator:*."""
        return ConvexClient(self.url, SecretStr(TEST_OPERATOR_TOKEN), timeout_s=5, **kwargs)

    def alive(self) -> bool:
        return self.process.poll() is None

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

    def dump(self, table: str) -> list[dict[str, Any]]:
        reply = httpx.get(f"{self.url}/_dev/dump", params={"table": table}, timeout=10)
        reply.raise_for_status()
        data = reply.json()
        return data if isinstance(data, list) else data.get("rows", data.get(table, []))

    def stop(self) -> None:
        if self.process.poll() is None:
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
    reclaim_ms: int = 1000,
    port: int | None = None,
    extra_env: dict[str, str] | None = None,
) -> DevBackend:
    if not DEV_BACKEND.exists():
        pytest.fail(f"{DEV_BACKEND} does not exist: the integration tests need the dev backend")
    if not TSX.exists():
        pytest.fail(f"{TSX} does not exist: run npm ci")
    port = port or free_port()
    log_path = directory / f"devbackend-{port}.log"
    env = {
        **os.environ,
        "WORKER_TOKEN": TEST_WORKER_TOKEN,
        "OPERATOR_TOKEN": TEST_OPERATOR_TOKEN,
        "ALLOWED_REPO_HOSTS": allowed_hosts,
        "DEV_BACKEND_PORT": str(port),
        "RECLAIM_INTERVAL_MS": str(reclaim_ms),
        "DEV_BACKEND_ADMIN": "1",
        **(extra_env or {}),
    }
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [str(TSX), str(DEV_BACKEND)],
            cwd=REPO_ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    backend = DevBackend(f"http://127.0.0.1:{port}", port, process, log_path, allowed_hosts)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"dev backend exited with {process.returncode}:\n{backend.log_tail()}")
        try:
            if httpx.get(f"{backend.url}/health", timeout=1).status_code == 200:
                return backend
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    backend.stop()
    pytest.fail(f"dev backend not healthy within 60 s:\n{backend.log_tail()}")


@pytest.fixture(scope="session")
def session_dev_backend(
    tmp_path_factory: pytest.TempPathFactory, git_server: Any
) -> Iterator[DevBackend]:
    backend = start_dev_backend(
        tmp_path_factory.mktemp("devbackend"), f"github.com,{git_server.host}"
    )
    yield backend
    backend.stop()


@pytest.fixture
def dev_backend(session_dev_backend: DevBackend) -> DevBackend:
    """The shared dev backend, emptied for this test (and resumed if a test paused it)."""
    if not session_dev_backend.alive():
        pytest.fail(f"dev backend died:\n{session_dev_backend.log_tail()}")
    session_dev_backend.resume()
    session_dev_backend.reset()
    return session_dev_backend


@pytest.fixture
def own_dev_backend(tmp_path: Path, git_server: Any) -> Iterator[Callable[..., DevBackend]]:
    """A dev backend of the test's own, which the test may stop and restart."""
    started: list[DevBackend] = []

    def factory(port: int | None = None) -> DevBackend:
        backend = start_dev_backend(tmp_path, f"github.com,{git_server.host}", port=port)
        started.append(backend)
        return backend

    yield factory
    for backend in started:
        backend.stop()


# --- worker processes ------------------------------------------------------------------


@dataclass
class WorkerProcess:
    name: str
    process: subprocess.Popen[bytes]
    log_path: Path
    health_port: int
    env: dict[str, str]
    lines: list[dict[str, Any]] = field(default_factory=list)
    raw: list[str] = field(default_factory=list)
    _offset: int = 0

    def read_logs(self) -> list[dict[str, Any]]:
        with open(self.log_path, encoding="utf-8", errors="replace") as handle:
            handle.seek(self._offset)
            chunk = handle.read()
        complete, _, _rest = chunk.rpartition("\n")
        if not complete and not chunk.endswith("\n"):
            return self.lines
        self._offset += len((complete + "\n").encode("utf-8")) if complete else 0
        for line in complete.splitlines():
            if not line.strip():
                continue
            self.raw.append(line)
            try:
                self.lines.append(json.loads(line))
            except ValueError:
                self.lines.append({"event": "non-json", "line": line})
        return self.lines

    def events(self, name: str) -> list[dict[str, Any]]:
        return [e for e in self.read_logs() if e.get("event") == name]

    def wait_event(
        self, name: str, timeout: float = 30, where: Callable[[dict[str, Any]], bool] | None = None
    ) -> dict[str, Any]:
        def found() -> dict[str, Any] | None:
            for entry in self.events(name):
                if where is None or where(entry):
                    return entry
            if self.process.poll() is not None and not any(
                e.get("event") == name for e in self.read_logs()
            ):
                raise AssertionError(
                    f"{self.name} exited ({self.process.returncode}) before {name}:\n"
                    + "\n".join(self.raw[-30:])
                )
            return None

        try:
            return wait_until(found, timeout)  # type: ignore[no-any-return]
        except AssertionError as exc:
            raise AssertionError(
                f"{exc}; waiting for {name}:\n" + "\n".join(self.raw[-30:])
            ) from None

    def get(self, path: str) -> httpx.Response:
        return httpx.get(f"http://127.0.0.1:{self.health_port}{path}", timeout=3)

    def signal(self, sig: int) -> None:
        self.process.send_signal(sig)

    def wait(self, timeout: float) -> int:
        return self.process.wait(timeout)

    def kill9(self) -> None:
        self.process.kill()
        self.process.wait(10)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)


@pytest.fixture
def fake_claude_log(tmp_path: Path) -> Path:
    return tmp_path / "fake-claude.jsonl"


def read_claude_log(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    # A line longer than the fake's write buffer lands in several writes: skip the last line
    # until its newline is there.
    complete = path.read_text().rpartition("\n")[0]
    return [json.loads(line) for line in complete.splitlines() if line.strip()]


@pytest.fixture
def start_worker(
    tmp_path: Path, git_server: Any, fake_claude_log: Path
) -> Iterator[Callable[..., WorkerProcess]]:
    workers: list[WorkerProcess] = []

    def start(backend: DevBackend, name: str = "w1", **env_overrides: str) -> WorkerProcess:
        health_port = free_port()
        env = {
            "PATH": f"{VENV_BIN}:{os.environ.get('PATH', '/usr/bin:/bin')}",
            "HOME": str(tmp_path / "home"),
            "CONVEX_URL": backend.url,
            "WORKER_TOKEN": TEST_WORKER_TOKEN,
            "WORKER_ID": f"{name}-{secrets.token_hex(2)}",
            "POLL_INTERVAL_MS": "200",
            "IDLE_POLL_MAX_MS": "500",
            "LEASE_MS": "30000",
            "HEARTBEAT_MS": "500",
            "CONVEX_TIMEOUT_MS": "2000",
            "DRAIN_TIMEOUT_MS": "10000",
            "JOB_TIMEOUT_MS": "120000",
            "STEP_TIMEOUT_MS": "60000",
            "CLONE_TIMEOUT_MS": "60000",
            "AUTH_RECHECK_MS": "1000",
            "TEMP_DIR": str(tmp_path / f"tmp-{name}"),
            "MIN_FREE_DISK_MB": "1",
            "MAX_REPO_MB": "50",
            "ALLOWED_REPO_HOSTS": f"github.com,{git_server.host}",
            "GIT_CA_BUNDLE": str(git_server.cert),
            "CLAUDE_BIN": str(FAKE_CLAUDE),
            "CLAUDE_CONFIG_DIR": str(tmp_path / f"claude-config-{name}"),
            "CLAUDE_ENV_PASSTHROUGH": "FAKE_CLAUDE_MODE,FAKE_CLAUDE_MODE_FILE,FAKE_CLAUDE_LOG,"
            "FAKE_CLAUDE_DELAY",
            "FAKE_CLAUDE_LOG": str(fake_claude_log),
            "HEALTH_BIND": f"127.0.0.1:{health_port}",
            "LOG_FORMAT": "json",
            "LOG_LEVEL": "debug",
        }
        env.update(env_overrides)
        (tmp_path / "home").mkdir(exist_ok=True)
        log_path = tmp_path / f"worker-{name}.log"
        with open(log_path, "ab") as log:
            process = subprocess.Popen(
                [str(WORKER_BIN), "run"],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        worker = WorkerProcess(name, process, log_path, health_port, env)
        workers.append(worker)
        wait_until(lambda: _healthy(worker), 30)
        return worker

    yield start
    for worker in workers:
        worker.stop()


def _healthy(worker: WorkerProcess) -> bool:
    if worker.process.poll() is not None:
        raise AssertionError(
            f"worker exited with {worker.process.returncode}:\n{worker.log_path.read_text()}"
        )
    with contextlib.suppress(httpx.HTTPError):
        return worker.get("/healthz").status_code == 200
    return False


def get_job(backend: DevBackend, job_id: str) -> dict[str, Any]:
    with backend.operator_client() as client:
        value = client.call("query", "jobs:get", {"token": TEST_OPERATOR_TOKEN, "jobId": job_id})
    assert value is not None, f"job {job_id} not found"
    return value  # type: ignore[no-any-return]


def wait_status(
    backend: DevBackend, job_id: str, statuses: set[str], timeout: float = 60
) -> dict[str, Any]:
    last: dict[str, Any] = {}

    def check() -> dict[str, Any] | None:
        nonlocal last
        last = get_job(backend, job_id)
        return last if last["status"] in statuses else None

    try:
        return wait_until(check, timeout, 0.2)  # type: ignore[no-any-return]
    except AssertionError:
        raise AssertionError(f"job {job_id} not in {statuses} within {timeout} s: {last}") from None


def enqueue(backend: DevBackend, url: str, **kwargs: Any) -> str:
    with backend.operator_client() as client:
        reply = client.enqueue(url, **kwargs)
    return reply.job_id
