"""scripts/demo-standins.sh, what `make deploy`'s demo job uses when nothing real is reachable:
it starts both stand-ins, the sample repository clones over HTTPS with the written
certificate, and the Messages API answers a probe as the scripted model does."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "demo-standins.sh"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def standins(tmp_path: Path) -> Iterator[dict[str, str]]:
    env = {
        **os.environ,
        "PYTHON": sys.executable,
        "DEMO_STANDINS_HOST": "127.0.0.1",
        "DEMO_GIT_PORT": str(free_port()),
        "DEMO_API_PORT": str(free_port()),
        "DEMO_STANDINS_STATE": str(tmp_path / "state"),
    }

    def script(command: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["bash", str(SCRIPT), command],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    started = script("start")
    assert started.returncode == 0, started.stderr
    try:
        info: dict[str, str] = json.loads(Path(started.stdout.strip()).read_text())
        # A second start finds the running stand-ins and reports the same state.
        again = script("start")
        assert again.stdout == started.stdout
        yield info
    finally:
        script("stop")
    assert not (tmp_path / "state" / "pid").exists()


def test_the_sample_repository_clones_over_https_with_the_written_certificate(
    standins: dict[str, str], tmp_path: Path
) -> None:
    assert standins["repo_url"].startswith(f"https://{standins['git_host']}/")
    # The environment's GIT_SSL_CAINFO would win over `-c http.sslCAInfo`: set it instead.
    clone = subprocess.run(
        ["git", "clone", "-q", standins["repo_url"], str(tmp_path / "clone")],
        env={**os.environ, "GIT_SSL_CAINFO": standins["ca_file"]},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert clone.returncode == 0, clone.stderr
    assert (tmp_path / "clone" / "README.md").read_text().startswith("# Hello queue")


def test_the_messages_api_answers_like_the_scripted_model(standins: dict[str, str]) -> None:
    reply = httpx.post(
        f"{standins['anthropic_base_url']}/v1/messages",
        json={
            "model": "claude-demo",
            "max_tokens": 16,
            "messages": [{"role": "user", "content": "probe"}],
        },
        headers={"x-api-key": "sk-ant-local_demo_not_a_key"},
        timeout=10,
    )
    assert reply.status_code == 200, reply.text
    assert reply.json()["content"][0]["text"] == "ok"
