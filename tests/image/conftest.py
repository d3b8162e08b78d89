"""Fixtures for the image tests: the built image and hardened worker containers."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import docker
import pytest
from docker.models.containers import Container

from tests.support import FAKE_CLAUDE, REPO_ROOT, TEST_WORKER_TOKEN, free_port

WORKER_UID = 10001


def _lock() -> dict[str, str]:
    pairs = (
        line.split("=", 1)
        for line in (REPO_ROOT / "worker" / "claude-cli.lock").read_text().splitlines()
        if line and not line.startswith("#")
    )
    return {key: value for key, value in pairs}


CLAUDE_CLI = _lock()


@pytest.fixture(scope="session")
def docker_client() -> docker.DockerClient:
    try:
        client = docker.from_env()
        client.ping()
    except docker.errors.DockerException as error:
        pytest.fail(f"the image tests need a Docker engine (make engine): {error}")
    return client


@pytest.fixture(scope="session")
def image(docker_client: docker.DockerClient) -> str:
    """Build the image exactly as `make image` does; a warm build is a cache hit."""
    result = subprocess.run(
        ["bash", str(REPO_ROOT / "scripts" / "build-image.sh")],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=2400,
        check=False,
    )
    if result.returncode != 0:
        pytest.fail(f"make image failed:\n{result.stderr[-4000:]}")
    version = subprocess.run(
        [
            str(REPO_ROOT / ".venv" / "bin" / "python"),
            "-c",
            "import fondation_worker; print(fondation_worker.__version__)",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout.strip()
    return f"fondation-worker:{version}"


def owned_dir(path: Path) -> Path:
    """A host directory the container's worker user may write."""
    path.mkdir(parents=True, exist_ok=True)
    os.chown(path, WORKER_UID, WORKER_UID)
    return path


class WorkerContainer:
    def __init__(self, container: Container, health_port: int, temp_dir: Path) -> None:
        self.container = container
        self.health_port = health_port
        self.temp_dir = temp_dir

    def logs(self) -> str:
        return self.container.logs().decode(errors="replace")

    def health(self) -> str:
        self.container.reload()
        state: dict[str, Any] = self.container.attrs["State"]
        return str(state.get("Health", {}).get("Status", "none"))

    def wait_healthy(self, timeout: float = 90) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.health() == "healthy":
                return
            if self.container.status == "exited":
                break
            time.sleep(1)
        raise AssertionError(f"container not healthy ({self.health()}):\n{self.logs()[-4000:]}")


@pytest.fixture
def worker_container(
    docker_client: docker.DockerClient, image: str, tmp_path: Path
) -> Iterator[Callable[..., WorkerContainer]]:
    """Start the image the way production does: read-only, no capabilities, no new
    privileges, credentials read-only. Host networking lets it reach the loopback dev
    backend and git server of the test."""
    started: list[Container] = []

    def start(
        env: dict[str, str],
        *,
        fake_claude: bool = True,
        credentials: Path | None = None,
        extra_volumes: dict[str, dict[str, str]] | None = None,
    ) -> WorkerContainer:
        port = free_port()
        temp_dir = owned_dir(tmp_path / f"work-{port}")
        volumes: dict[str, dict[str, str]] = {
            str(temp_dir): {"bind": "/tmp/fondation", "mode": "rw"},
            **(extra_volumes or {}),
        }
        if fake_claude:
            # The test double replaces the real CLI in this test only.
            volumes[str(FAKE_CLAUDE)] = {"bind": "/usr/local/bin/claude", "mode": "ro"}
        if credentials is not None:
            volumes[str(credentials)] = {"bind": "/run/claude-credentials", "mode": "ro"}
        container = docker_client.containers.run(
            image,
            detach=True,
            read_only=True,
            cap_drop=["ALL"],
            security_opt=["no-new-privileges"],
            network_mode="host",
            tmpfs={
                "/tmp": "",
                "/home/worker/.claude": f"uid={WORKER_UID},gid={WORKER_UID},mode=0700",
            },
            volumes=volumes,
            environment={
                "WORKER_TOKEN": TEST_WORKER_TOKEN,
                "HEALTH_BIND": f"127.0.0.1:{port}",
                "POLL_INTERVAL_MS": "300",
                "IDLE_POLL_MAX_MS": "1000",
                "MIN_FREE_DISK_MB": "1",
                **env,
            },
            labels={"org.fondation.test": "image"},
        )
        started.append(container)
        return WorkerContainer(container, port, temp_dir)

    yield start
    for container in started:
        with contextlib.suppress(docker.errors.NotFound):
            container.remove(force=True)
    shutil.rmtree(tmp_path, ignore_errors=True)
