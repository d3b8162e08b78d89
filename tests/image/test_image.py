"""The worker image as production runs it (issue 5): pinned CLI, non-root, hardened flags,
credentials mounted read-only, a job end to end against the dev backend, a clean stop."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker
import pytest

from tests.support import (
    SAMPLE_FILES,
    TEST_WORKER_TOKEN,
    DevBackend,
    enqueue,
    read_claude_log,
    wait_status,
    wait_until,
)
from tests.support.fake_sink import FakeSink
from tests.support.worker_process import FAKE_CLAUDE_PASSTHROUGH

from .conftest import CLAUDE_CLI, WORKER_UID, WorkerContainer

pytestmark = pytest.mark.docker


def _exec(container: Any, *argv: str) -> tuple[int, str]:
    code, output = container.exec_run(list(argv), user=str(WORKER_UID))
    return code, output.decode(errors="replace")


def _job_env(backend: DevBackend, git_server: Any, sink: FakeSink, **extra: str) -> dict[str, str]:
    # Landlock (the image's default) keeps the fake claude out of any shared directory: it
    # reports to the sink over the host network.
    return {
        "CONVEX_URL": backend.url,
        "ALLOWED_REPO_HOSTS": f"github.com,{git_server.host}",
        "GIT_CA_BUNDLE": "/run/test-ca.pem",
        "LEASE_MS": "6000",
        "HEARTBEAT_MS": "1000",
        "CLAUDE_ENV_PASSTHROUGH": FAKE_CLAUDE_PASSTHROUGH,
        "FAKE_CLAUDE_LOG": "claude.jsonl",
        "FAKE_CLAUDE_SINK": sink.address,
        **extra,
    }


def _job_volumes(git_server: Any) -> dict[str, dict[str, str]]:
    return {str(git_server.cert): {"bind": "/run/test-ca.pem", "mode": "ro"}}


@pytest.fixture
def sink(tmp_path: Path) -> Iterator[FakeSink]:
    fake_log = FakeSink(tmp_path / "fake-log").start()
    yield fake_log
    fake_log.stop()


def _leftovers(temp_dir: Path) -> list[Path]:
    """Everything in TEMP_DIR but the worker's own (empty) ``jobs`` directory."""
    return sorted(p for p in temp_dir.rglob("*") if p != temp_dir / "jobs")


def _credentials(tmp_path: Path) -> Path:
    creds = tmp_path / "claude-creds"
    creds.mkdir()
    (creds / ".credentials.json").write_text('{"claudeAiOauth": {"accessToken": "test"}}')
    (creds / ".credentials.json").chmod(0o444)
    creds.chmod(0o555)  # what the container sees is read-only anyway
    return creds


def test_pinned_claude_cli_and_non_root_user(
    docker_client: docker.DockerClient, image: str
) -> None:
    version = docker_client.containers.run(image, ["claude", "--version"], remove=True)
    assert version.decode().split()[0] == CLAUDE_CLI["CLAUDE_CLI_VERSION"]
    ident = docker_client.containers.run(image, ["id"], remove=True).decode()
    assert ident.startswith(f"uid={WORKER_UID}(worker) gid={WORKER_UID}(worker)")
    attrs = docker_client.images.get(image).attrs["Config"]
    assert attrs["User"] == f"{WORKER_UID}:{WORKER_UID}"
    assert attrs["StopSignal"] == "SIGTERM"
    assert attrs["Healthcheck"]["Test"][-1] == "healthcheck"
    labels = attrs["Labels"]
    assert labels["org.opencontainers.image.version"]
    assert labels["org.opencontainers.image.revision"]
    # The status play reads the label, /healthz the environment: both from the lock.
    assert labels["org.fondation.claude-cli.version"] == CLAUDE_CLI["CLAUDE_CLI_VERSION"]
    assert f"CLAUDE_CLI_VERSION={CLAUDE_CLI['CLAUDE_CLI_VERSION']}" in attrs["Env"]


def test_hardened_container_runs_a_job_end_to_end(
    worker_container: Any,
    dev_backend: DevBackend,
    git_server: Any,
    tmp_path: Path,
    sink: FakeSink,
) -> None:
    worker: WorkerContainer = worker_container(
        _job_env(dev_backend, git_server, sink),
        credentials=_credentials(tmp_path),
        extra_volumes=_job_volumes(git_server),
    )
    worker.wait_healthy()
    # The read-only login was copied into the writable tmpfs config dir.
    code, _ = _exec(worker.container, "sh", "-c", "test -w /home/worker/.claude/.credentials.json")
    assert code == 0, worker.logs()[-3000:]
    code, _ = _exec(worker.container, "sh", "-c", "echo x > /run/claude-credentials/probe")
    assert code != 0, "the credentials mount must be read-only"
    code, _ = _exec(worker.container, "sh", "-c", "echo x > /opt/probe")
    assert code != 0, "the root filesystem must be read-only"

    url = git_server.add_repo("acme", "image-e2e", SAMPLE_FILES)
    job_id = enqueue(dev_backend, url, branch="main")
    job = wait_status(dev_backend, job_id, {"completed", "dead"}, timeout=120)

    assert job["status"] == "completed", worker.logs()[-4000:]
    docs = [row for row in dev_backend.dump("docs") if row.get("jobId") == job_id]
    assert docs, "the generated docs must arrive in Convex"
    # content is stored apart from the metadata rows (docContents)
    contents = {row["docId"]: row["content"] for row in dev_backend.dump("docContents")}
    assert all(contents[doc["_id"]].strip() for doc in docs)
    deadline = time.monotonic() + 10
    while _leftovers(worker.temp_dir) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not _leftovers(worker.temp_dir)
    assert TEST_WORKER_TOKEN not in worker.logs()


def test_docker_stop_during_a_job_drains_and_exits_zero(
    worker_container: Any,
    dev_backend: DevBackend,
    git_server: Any,
    tmp_path: Path,
    sink: FakeSink,
) -> None:
    worker: WorkerContainer = worker_container(
        _job_env(
            # hang@chapters, not hang: the worker's start-up probe must pass (a hanging probe
            # holds every claim back for the probe's whole timeout).
            dev_backend,
            git_server,
            sink,
            FAKE_CLAUDE_MODE="hang@chapters",
            DRAIN_TIMEOUT_MS="3000",
        ),
        credentials=_credentials(tmp_path),
        extra_volumes=_job_volumes(git_server),
    )
    worker.wait_healthy()
    url = git_server.add_repo("acme", "image-stop", SAMPLE_FILES)
    job_id = enqueue(dev_backend, url, branch="main")
    wait_status(dev_backend, job_id, {"running"}, timeout=60)
    wait_until(
        lambda: any(
            entry["event"] == "hang" and entry["job"] == job_id
            for entry in read_claude_log(sink.directory / "claude.jsonl")
        ),
        30,
    )

    started = time.monotonic()
    worker.container.stop(timeout=30)
    stopped_in = time.monotonic() - started
    worker.container.reload()

    assert worker.container.attrs["State"]["ExitCode"] == 0, worker.logs()[-4000:]
    assert stopped_in < 30, f"the drain must end before the stop timeout ({stopped_in:.1f} s)"
    job = wait_status(dev_backend, job_id, {"pending", "completed"}, timeout=10)
    assert job["attempts"] == 0 or job["status"] == "completed", job
    assert not _leftovers(worker.temp_dir)


def test_without_credentials_the_worker_stays_up_and_says_claude_is_not_logged_in(
    worker_container: Any, dev_backend: DevBackend
) -> None:
    # The real Claude CLI of the image, no login, no token.
    worker: WorkerContainer = worker_container({"CONVEX_URL": dev_backend.url}, fake_claude=False)
    worker.wait_healthy()
    probe = (
        "import http.client, os; c = http.client.HTTPConnection(os.environ['HEALTH_BIND']);"
        "c.request('GET', '/readyz'); print(c.getresponse().read().decode())"
    )
    code, output = _exec(worker.container, "python", "-c", probe)
    assert code == 0, output
    assert "not logged in" in output.lower(), output
    wait_until(lambda: "not logged in" in worker.logs().lower(), 60)
    worker.container.reload()
    assert worker.container.status == "running"
