"""Shared fixtures: settings, the loopback git server, the dev backend and worker processes.
What they are built from lives in tests/support (shared with bench and chaos).

The dev backend fixture FAILS (never skips) when devbackend/server.ts is missing or does not
become healthy: integration tests must not pass by not running.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from fondation_worker.config import Settings
from tests.support import (
    TEST_WORKER_TOKEN,
    DevBackend,
    DevBackendError,
    WorkerProcess,
    free_port,
    launch_worker,
    make_settings,
    start_dev_backend,
    worker_env,
)
from tests.support.git_server import GitServer


@pytest.fixture
def settings_factory(tmp_path: Path) -> Callable[..., Settings]:
    def factory(**overrides: Any) -> Settings:
        overrides.setdefault("temp_dir", tmp_path / "work")
        return make_settings(**overrides)

    return factory


# --- git server ------------------------------------------------------------------------


@pytest.fixture(scope="session")
def git_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GitServer]:
    server = GitServer(tmp_path_factory.mktemp("git-server"))
    server.start()
    yield server
    server.stop()


# --- dev backend -----------------------------------------------------------------------


def _start_backend(directory: Path, git_server: GitServer, port: int | None = None) -> DevBackend:
    try:
        return start_dev_backend(directory, f"github.com,{git_server.host}", port=port)
    except DevBackendError as exc:
        pytest.fail(str(exc))


@pytest.fixture(scope="session")
def session_dev_backend(
    tmp_path_factory: pytest.TempPathFactory, git_server: GitServer
) -> Iterator[DevBackend]:
    backend = _start_backend(tmp_path_factory.mktemp("devbackend"), git_server)
    yield backend
    backend.stop()


@pytest.fixture
def dev_backend(session_dev_backend: DevBackend) -> DevBackend:
    """The shared dev backend, emptied for this test (and resumed if a test paused it)."""
    if not session_dev_backend.alive():
        pytest.fail(f"dev backend died:\n{session_dev_backend.log_tail()}")
    session_dev_backend.resume()
    session_dev_backend.reset()
    session_dev_backend.admin("stats/reset")  # /_dev/stats counts this test's calls only
    return session_dev_backend


@pytest.fixture
def own_dev_backend(tmp_path: Path, git_server: GitServer) -> Iterator[Callable[..., DevBackend]]:
    """A dev backend of the test's own, which the test may stop and restart."""
    started: list[DevBackend] = []

    def factory(port: int | None = None) -> DevBackend:
        backend = _start_backend(tmp_path, git_server, port)
        started.append(backend)
        return backend

    yield factory
    for backend in started:
        backend.stop()


# --- worker processes ------------------------------------------------------------------

# The timings of process tests: fast polls and heartbeats, a lease that outlasts CI stalls.
TEST_TIMINGS = {
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
    "MAX_REPO_MB": "50",
}


@pytest.fixture
def fake_claude_log(tmp_path: Path) -> Path:
    return tmp_path / "fake-claude.jsonl"


@pytest.fixture
def start_worker(
    tmp_path: Path, git_server: GitServer, fake_claude_log: Path
) -> Iterator[Callable[..., WorkerProcess]]:
    workers: list[WorkerProcess] = []

    def start(backend: DevBackend, name: str = "w1", **env_overrides: str) -> WorkerProcess:
        health_port = free_port()
        home = tmp_path / "home"
        home.mkdir(exist_ok=True)
        env = worker_env(
            name,
            convex_url=backend.url,
            worker_token=TEST_WORKER_TOKEN,
            workdir=tmp_path,
            home=home,
            allowed_repo_hosts=f"github.com,{git_server.host}",
            git_ca_bundle=git_server.cert,
            health_port=health_port,
        )
        env.update(TEST_TIMINGS)
        env["FAKE_CLAUDE_LOG"] = str(fake_claude_log)
        env.update(env_overrides)
        worker = launch_worker(name, env, tmp_path / f"worker-{name}.log", health_port)
        workers.append(worker)
        return worker

    yield start
    for worker in workers:
        worker.stop()
