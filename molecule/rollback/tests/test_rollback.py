"""After a broken release and a rollback: A runs, healthy; the broken image is gone."""

from __future__ import annotations

import json
import re
import time
from typing import Any


def journal(host: Any) -> str:
    out = host.run("journalctl --no-pager -n 60 -u fondation-worker@1").stdout
    return f"\n--- journal of fondation-worker@1 ---\n{out}"


def image_env(host: Any) -> str:
    content = host.file("/etc/fondation-worker/image.env").content_string
    match = re.search(r"^FONDATION_WORKER_IMAGE=(\S+)$", content, re.MULTILINE)
    assert match, content
    return match.group(1)


def releases(host: Any) -> list[str]:
    return list(host.file("/var/lib/fondation-worker/releases").content_string.split())


def test_the_broken_release_failed_with_its_reason(host: Any) -> None:
    failure = host.file("/var/lib/fondation-test-rollback-failure").content_string
    assert "did not pass the health gate" in failure
    assert "/healthz" in failure, failure


def test_the_rollback_went_back_to_a(host: Any) -> None:
    history = releases(host)
    assert len(history) == 2, history  # A then B; the broken image never passed the gate
    assert image_env(host) == history[0]


def test_a_runs_and_is_healthy(host: Any) -> None:
    data = json.loads(host.run("docker container inspect fondation-worker-1").stdout)[0]
    assert data["State"]["Running"], journal(host)
    assert data["Image"] == image_env(host)
    assert "org.fondation.test-variant" not in (data["Config"]["Labels"] or {})
    code = host.run("curl -s -o /dev/null -w '%{http_code}' http://127.0.0.1:8080/healthz").stdout
    assert code == "200", journal(host)
    assert host.service("fondation-worker@1").is_running


def test_docker_reports_a_healthy(host: Any) -> None:
    deadline = time.monotonic() + 60
    status = ""
    while time.monotonic() < deadline:
        status = host.run(
            "docker inspect --format '{{.State.Health.Status}}' fondation-worker-1"
        ).stdout.strip()
        if status == "healthy":
            break
        time.sleep(2)
    assert status == "healthy", journal(host)


def test_the_broken_image_was_pruned_and_b_kept(host: Any) -> None:
    variants = host.run(
        "docker image ls --filter label=org.opencontainers.image.title=fondation-worker "
        "--format '{{.ID}} {{.Repository}}:{{.Tag}}'"
    ).stdout
    assert "test-broken" not in variants, variants
    assert host.run(f"docker image inspect {releases(host)[1]}").rc == 0


def test_no_backup_is_left_behind(host: Any) -> None:
    leftovers = host.run("ls /etc/fondation-worker /etc/systemd/system | grep '~$' || true")
    assert leftovers.stdout.strip() == ""
