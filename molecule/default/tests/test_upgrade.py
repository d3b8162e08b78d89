"""After the upgrade from A to B with a job in flight: B runs, A is kept, the job finished."""

from __future__ import annotations

import json
import os
from typing import Any

import pytest

from tests.support.testinfra import dev_backend, image_env, journal, wait_job_ended

JOB_FILE = "/var/lib/fondation-test-upgrade-job"


def test_replica_runs_image_b(host: Any) -> None:
    data = json.loads(host.run("docker container inspect fondation-worker-1").stdout)[0]
    assert data["State"]["Running"], journal(host)
    assert data["Image"] == image_env(host)
    assert data["Config"]["Labels"].get("org.fondation.test-variant") == "upgrade-b"
    code = host.run("curl -s -o /dev/null -w '%{http_code}' http://127.0.0.1:8080/healthz").stdout
    assert code == "200", journal(host)


def test_b_is_loaded_and_no_upload_is_left_behind(host: Any) -> None:
    """side_effect.yml asserts the transfer's figures (only B's new layer travelled)."""
    assert host.run(f"docker image inspect {image_env(host)}").rc == 0
    assert host.run("ls -A /var/lib/fondation-worker/images").stdout.strip() == ""


def test_drift_made_before_the_upgrade_is_fixed(host: Any) -> None:
    assert host.package("python3-requests").is_installed
    unit = host.file("/etc/systemd/system/fondation-worker@.service").content_string
    assert "drift" not in unit, unit


def test_image_a_is_kept_for_a_rollback(host: Any) -> None:
    releases = host.file("/var/lib/fondation-worker/releases").content_string.split()
    assert len(releases) == 2, releases
    assert releases[-1] == image_env(host)
    assert host.run(f"docker image inspect {releases[0]}").rc == 0


def test_the_job_in_flight_was_not_lost(host: Any) -> None:
    url, token = dev_backend(
        "no job ran during the upgrade "
        "(start the dev backend with scripts/devbackend.sh start and export its URL)"
    )
    job_id = host.file(JOB_FILE).content_string.strip()
    job = wait_job_ended(url, token, job_id)
    assert job["status"] == "completed", json.dumps(job, indent=2) + journal(host)


def test_the_upgrade_restarted_the_replica_while_the_job_ran(host: Any) -> None:
    if not os.environ.get("FONDATION_TEST_CONVEX_URL"):
        pytest.skip("FONDATION_TEST_CONVEX_URL is not set: no job ran during the upgrade")
    job_id = host.file(JOB_FILE).content_string.strip()
    # A's log file outlives its container: it drained with the job in hand.
    logs = host.run("cat /var/log/fondation-worker/worker-1.log*").stdout
    draining = [
        json.loads(line)
        for line in logs.splitlines()
        if line.startswith("{") and '"worker.draining"' in line
    ]
    assert any(job_id in event.get("jobs", []) for event in draining), draining
