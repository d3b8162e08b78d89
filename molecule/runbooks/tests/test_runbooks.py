"""After the runbook plays (side_effect.yml): what each one promised, checked on the host.

The side effect keeps what it set up and what each play reported under STATE; the checks
below compare that with the host as it is now.
"""

from __future__ import annotations

import json
import os
import re
import urllib.request
from pathlib import Path
from typing import Any

from tests.support import testinfra
from tests.support.testinfra import image_env, releases

STATE = "/var/lib/fondation-test-runbooks"
WORK = "/var/lib/docker/volumes/fondation-work-1/_data/jobs"
MIB = 1024 * 1024


def journal(host: Any, unit: str = "fondation-worker@*") -> str:
    """Every replica's journal by default (the scale plays start and stop several)."""
    return testinfra.journal(host, unit)


def pinned_claude_cli() -> str:
    lock = Path(__file__).resolve().parents[3] / "worker" / "claude-cli.lock"
    found = re.search(r"(?m)^CLAUDE_CLI_VERSION=(\S+)$", lock.read_text())
    assert found, lock
    return found.group(1)


def state(host: Any, name: str) -> Any:
    content = host.file(f"{STATE}/{name}").content_string
    return json.loads(content) if name.endswith(".json") else content.strip()


def backend() -> tuple[str, str]:
    return testinfra.dev_backend(
        "no job ran (start the dev backend with scripts/devbackend.sh start and export its URL)"
    )


def get_job(job_id: str) -> dict[str, Any]:
    return testinfra.get_job(*backend(), job_id)


def wait_until_ended(job_id: str, timeout_s: float = 240) -> dict[str, Any]:
    return testinfra.wait_job_ended(*backend(), job_id, timeout_s)


# --- disk cleanup -----------------------------------------------------------------------------


def test_cleanup_removed_the_junk_the_test_left(host: Any) -> None:
    dangling = state(host, "dangling.id")
    stopped = state(host, "stopped.id")
    assert host.run(f"docker image inspect {dangling}").rc != 0, "the dangling image is still there"
    assert host.run(f"docker container inspect {stopped}").rc != 0, (
        "the stopped container is still there"
    )
    assert not host.file(f"{WORK}/oldjob-0000aaaa").exists, "the old workspace is still there"


def test_cleanup_freed_the_space_the_test_filled(host: Any) -> None:
    # 40 MiB image + 20 MiB container layer + 40 MiB workspace, all random bytes.
    freed = int(state(host, "du-filled")) - int(state(host, "du-cleaned"))
    assert freed >= 90 * MIB, f"only {freed / MIB:.1f} MiB freed under /var/lib/docker"
    report = state(host, "cleanup.json")
    assert report["workspaces_removed_bytes"] >= 40 * MIB, report
    assert report["images_removed_bytes"] >= 40 * MIB, report
    assert report["containers_removed"] >= 1, report
    assert any(path.endswith("/oldjob-0000aaaa") for path in report["workspaces_removed"]), report
    for mount, free_before, free_after, size in report["filesystems"]:
        assert mount.startswith("/"), report
        assert 0 <= free_before <= size, report
        assert 0 <= free_after <= size, report


def test_cleanup_kept_what_a_worker_needs(host: Any) -> None:
    history = releases(host)
    assert len(history) >= 2, history  # A, then B deployed by the side effect
    assert history[-1] == image_env(host)
    for image in history:  # the running release and those a rollback goes back to
        assert host.run(f"docker image inspect {image}").rc == 0, f"{image} was removed"
    report = state(host, "cleanup.json")
    assert set(history) <= set(report["images_kept"]), report
    # A young workspace, and an old one whose lock a running job holds, stay (as seen right
    # after the cleanup: the worker's own sweep may remove unlocked ones later).
    left = state(host, "workspaces-after.json")
    assert "youngjob-0000bbbb" in left, left
    assert "busyjob-0000cccc" in left, left
    assert "oldjob-0000aaaa" not in left, left
    assert any(path.endswith("/busyjob-0000cccc") for path in report["workspaces_kept_busy"])


def test_journal_is_within_the_cap(host: Any) -> None:
    usage = host.run("journalctl --disk-usage").stdout
    match = re.search(r"take up ([0-9.]+)([BKMGT])", usage)
    assert match, usage
    scale = {"B": 1, "K": 1024, "M": MIB, "G": 1024 * MIB, "T": 1024 * 1024 * MIB}
    assert float(match.group(1)) * scale[match.group(2)] <= 200 * MIB, usage


# --- auth refresh -----------------------------------------------------------------------------


def test_auth_refresh_restarted_the_replica(host: Any) -> None:
    assert state(host, "started-before-auth") != state(host, "started-after-auth")


def test_the_container_sees_the_new_token(host: Any) -> None:
    expected = state(host, "token.sha256")
    seen = host.run(
        "docker exec fondation-worker-1 python3 -c "
        '"import hashlib, os; print(hashlib.sha256('
        "os.environ.get('CLAUDE_CODE_OAUTH_TOKEN', '').encode()).hexdigest())\""
    )
    assert seen.rc == 0, seen.stderr + journal(host)
    assert seen.stdout.strip() == expected, "the replica does not run with the new token"
    env = host.file("/etc/fondation-worker/claude.env")
    assert (env.user, env.group, env.mode) == ("root", "root", 0o600)


def test_claude_was_ok_in_every_replica_after_the_refresh(host: Any) -> None:
    verdicts = state(host, "auth.json")
    assert verdicts, verdicts
    assert all(line.startswith("ok") for line in verdicts.values()), verdicts


# --- auth refresh by login --------------------------------------------------------------------


def test_the_login_command_lands_the_login_where_the_replicas_read_it(host: Any) -> None:
    """Run as printed (image, user, volume), the command wrote the login file as the image's
    user, private, into the credentials directory the replicas mount."""
    login = host.file("/srv/claude-creds/.credentials.json")
    assert login.exists, "the login command did not write into /srv/claude-creds"
    assert (login.uid, login.gid, login.mode) == (10001, 10001, 0o600)


def test_the_login_refresh_restarted_the_replica_on_the_login(host: Any) -> None:
    assert state(host, "started-before-login") != state(host, "started-after-login")
    verdicts = state(host, "auth-login.json")
    assert verdicts, verdicts
    assert all(line.startswith("ok") for line in verdicts.values()), verdicts
    check = host.run("docker exec fondation-worker-1 fondation-worker check")
    # The login copied from the mount into the replica's own config dir.
    assert "/run/claude-credentials: a login" in check.stdout, check.stdout + check.stderr


# --- scale ------------------------------------------------------------------------------------


def test_scale_up_ran_three_replicas(host: Any) -> None:
    assert state(host, "replicas-up.json") == [1, 2, 3]


def test_scale_down_left_exactly_one_healthy_replica(host: Any) -> None:
    assert state(host, "replicas-down.json") == [1]
    for replica in (2, 3):
        unit = host.service(f"fondation-worker@{replica}")
        assert not unit.is_running
        assert not unit.is_enabled
        assert host.run(f"docker container inspect fondation-worker-{replica}").rc != 0
        assert not host.file(f"/etc/fondation-worker/replica-{replica}.env").exists
        assert not host.file(f"/etc/fondation-worker/replica-{replica}.credential").exists
    assert host.service("fondation-worker@1").is_running, journal(host)
    code = host.run("curl -s -o /dev/null -w '%{http_code}' http://127.0.0.1:8080/healthz").stdout
    assert code == "200", journal(host)


def test_scaling_issued_and_revoked_the_replicas_credentials(host: Any) -> None:
    # Each replica the scale-up started got a credential of its own; the scale-down revoked
    # those of the replicas it removed, and replica 1's is still the active one.
    url, token = backend()
    body = json.dumps(
        {
            "path": "credentials:list",
            "args": {"token": token, "host": host.backend.get_hostname(), "includeRevoked": True},
            "format": "json",
        }
    ).encode()
    request = urllib.request.Request(
        f"{url}/api/query", data=body, headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        reply: dict[str, Any] = json.loads(response.read())
    assert reply["status"] == "success", reply
    by_worker: dict[str, list[Any]] = {}
    for credential in reply["value"]:
        by_worker.setdefault(credential["workerId"].rpartition("-")[2], []).append(credential)
    assert set(by_worker) >= {"1", "2", "3"}, reply["value"]
    assert [c["revokedAt"] for c in by_worker["1"]] == [None], by_worker["1"]
    for replica in ("2", "3"):
        assert all(c["revokedAt"] is not None for c in by_worker[replica]), by_worker[replica]


def test_no_job_was_lost_while_scaling_down(host: Any) -> None:
    backend()
    jobs = state(host, "scale-jobs.json")
    assert len(jobs) == 3, jobs
    for job_id in jobs:
        job = wait_until_ended(job_id)
        assert job["status"] == "completed", json.dumps(job, indent=2) + journal(host)
    # Both replicas that went away ran a held job when the scale down began (side_effect
    # holds every step until the first of them drains), so the first one stopped drained a
    # job in hand; replica 3's job may end before its turn. Every job above completed.
    drained = {}
    for replica in (2, 3):
        logs = host.run(f"cat /var/log/fondation-worker/worker-{replica}.log*").stdout
        drained[replica] = [
            json.loads(line)
            for line in logs.splitlines()
            if line.startswith("{") and '"worker.draining"' in line
        ]
    assert any(event.get("jobs") for events in drained.values() for event in events), (
        f"no replica that went away drained a job in hand: {drained}"
        + journal(host, "fondation-test-release-hold")
        + journal(host)
    )


# --- stuck jobs -------------------------------------------------------------------------------


def test_stuck_jobs_reclaimed_the_killed_workers_job(host: Any) -> None:
    backend()
    seen = state(host, "stuck.json")
    job_id = seen["job"]
    assert seen["listed"]["why"] == "lease_expired", seen
    assert {"jobId": job_id, "outcome": "pending"} in seen["reclaim"]["jobs"], seen
    # Reclaimed, not lost: it runs again once a worker is back.
    job = wait_until_ended(job_id)
    assert job["status"] == "completed", json.dumps(job, indent=2) + journal(host)
    assert job["attempts"] >= 2, job


# --- status -----------------------------------------------------------------------------------


def test_status_reported_the_one_replica(host: Any) -> None:
    rows = state(host, "status.json")
    assert [row["replica"] for row in rows] == [1], rows
    row = rows[0]
    assert row["healthy"] is True, row
    assert row["container"] == "running", row
    assert row["current_image"] is True, row
    # The short ID of the image the container runs (it once came out as U+0001).
    assert re.fullmatch(r"[0-9a-f]{12}", row["image"]), row
    assert image_env(host).startswith(f"sha256:{row['image']}"), row
    assert row["version"] not in ("", "unknown"), row
    # The layers in force, Landlock on by default with the real image.
    assert row["layers"]["landlock"].startswith("on (ABI "), row
    assert row["layers"]["cli"] == row["layers"]["documents"] == "on", row
    # The image's pinned CLI (worker/claude-cli.lock), from its label.
    assert row["claude_cli"] == pinned_claude_cli(), row
    if os.environ.get("FONDATION_TEST_CONVEX_URL"):
        # side_effect.yml waited for /readyz before this status run.
        assert row["ready"] is True, row
        assert row["starting"] is False, row


def test_status_straight_after_a_restart_says_starting_or_ready(host: Any) -> None:
    # Taken right after replica 1 came back: its start-up Claude check may still run. That
    # is reported as `starting`, with the start-up reason, never as a failure.
    rows = state(host, "status-early.json")
    assert [row["replica"] for row in rows] == [1], rows
    row = rows[0]
    assert row["healthy"] is True, row
    if row["ready"]:
        assert row["starting"] is False, row
    else:
        assert row["starting"] is True, (
            "a replica that is not ready right after a restart must be `starting`; read "
            f"its log (docker logs fondation-worker-1) for why it is not: {row}"
        )
        assert all("start" in reason for reason in row["reasons"]), row
