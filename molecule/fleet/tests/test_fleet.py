"""After a broken release was rolled out to two hosts on A: it failed on the canary and
went no further; every host runs A, and the job the other held ran through the rollout
and completed. The canary then took a good B and playbooks/rollback.yml's way back to A."""

from __future__ import annotations

import json
import re
import time
from typing import Any

from tests.support.testinfra import (
    dev_backend,
    get_job,
    image_env,
    journal,
    releases,
    wait_job_ended,
)

STATE = "/var/lib/fondation-test-fleet"
WORKER_PLAY = "PLAY [Roll out the worker release]"
PREPARE_PLAY = "PLAY [Prepare the worker hosts]"


def name(host: Any) -> str:
    return str(host.backend.get_hostname())


def canary(host: Any) -> str:
    return str(host.file(f"{STATE}/canary").content_string.strip())


def is_canary(host: Any) -> bool:
    return name(host) == canary(host)


ANSI = re.compile(r"\x1b\[[0-9;]*m")


def rollout(host: Any) -> dict[str, Any]:
    """The failed rollout's exit code and output (colour codes removed); Ansible prints
    failed results on stderr, the rest on stdout."""
    data: dict[str, Any] = json.loads(host.file(f"{STATE}/rollout.json").content_string)
    data["stdout"] = ANSI.sub("", data["stdout"])
    data["stderr"] = ANSI.sub("", data["stderr"])
    return data


def recap(stdout: str, hostname: str) -> dict[str, int]:
    match = re.search(rf"^{re.escape(hostname)}\s*:\s*(.*)$", stdout, re.MULTILINE)
    assert match, f"{hostname} is not in the play recap:\n{stdout[-3000:]}"
    return {key: int(value) for key, value in re.findall(r"(\w+)=(\d+)", match.group(1))}


# --- the rollout ------------------------------------------------------------------------


def test_the_rollout_failed_at_the_canary_health_gate(host: Any) -> None:
    seen = rollout(host)
    assert seen["rc"] != 0, seen["stdout"][-3000:]
    out = seen["stdout"] + "\n" + seen["stderr"]
    # The callback folds long messages: compare with the whitespace collapsed.
    words = " ".join(out.split())
    assert "did not pass the health gate" in words, out[-3000:]
    assert "Rolled back to the previous release" in words, out[-3000:]
    assert re.search(r"its replicas are\s+healthy", words), out[-3000:]
    assert "/healthz" in words, out[-3000:]
    assert recap(out, canary(host))["failed"] == 1, out[-3000:]


def test_every_host_was_prepared_before_the_worker_roll(host: Any) -> None:
    out = rollout(host)["stdout"]
    assert out.count(PREPARE_PLAY) == 1, out[-3000:]
    prepare = out.split(PREPARE_PLAY, 1)[1].split(WORKER_PLAY, 1)[0]
    assert f"[{name(host)}]" in prepare, prepare[-3000:]


def test_the_worker_roll_reached_the_canary_only(host: Any) -> None:
    out = rollout(host)["stdout"]
    # One batch, the canary's: no later batch started.
    assert out.count(WORKER_PLAY) == 1, out[-3000:]
    worker_play = out.split(WORKER_PLAY, 1)[1].split("PLAY RECAP", 1)[0]
    reached = f"[{name(host)}]" in worker_play
    assert reached == is_canary(host), worker_play[-3000:]
    if not is_canary(host):
        counts = recap(out, name(host))
        assert counts["failed"] == 0, counts
        assert counts["changed"] == 0, counts  # the preparation found nothing to change


# --- every host on A ----------------------------------------------------------------------


def test_every_host_runs_release_a_healthy(host: Any) -> None:
    history = releases(host)
    # The broken image never passed a gate; the canary then went A -> B -> A (rollback.yml).
    assert len(history) == (2 if is_canary(host) else 1), history
    assert image_env(host) == history[0]
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


def test_no_host_keeps_the_broken_image(host: Any) -> None:
    # On the canary B's deploy pruned it; the other never received it.
    variants = host.run(
        "docker image ls --filter label=org.opencontainers.image.title=fondation-worker "
        "--format '{{.ID}} {{.Repository}}:{{.Tag}}'"
    ).stdout
    assert "test-broken" not in variants, variants


def test_the_canary_went_back_to_a_and_keeps_b(host: Any) -> None:
    if not is_canary(host):
        assert not host.file(f"{STATE}/rollback.json").exists
        return
    done = json.loads(host.file(f"{STATE}/rollback.json").content_string)
    history = releases(host)
    assert done["from"] == history[1], done
    assert done["to"] == history[0] == image_env(host), done
    assert host.run(f"docker image inspect {history[1]}").rc == 0


def test_no_backup_is_left_behind(host: Any) -> None:
    leftovers = host.run("ls /etc/fondation-worker /etc/systemd/system | grep '~$' || true")
    assert leftovers.stdout.strip() == ""


def test_only_the_canary_restarted(host: Any) -> None:
    before = host.file(f"{STATE}/started-before").content_string.strip()
    after = host.file(f"{STATE}/started-after").content_string.strip()
    if is_canary(host):
        assert after != before  # the broken release, then A again
    else:
        assert after == before, journal(host)


# --- jobs -----------------------------------------------------------------------------------


def backend() -> tuple[str, str]:
    return dev_backend("no job ran during the rollout (scripts/molecule.sh starts the dev backend)")


def test_each_host_ran_its_own_job_before_the_rollout(host: Any) -> None:
    backend()
    job = json.loads(host.file(f"{STATE}/job-before.json").content_string)
    assert job["status"] == "running", job
    assert job["lockedBy"] == f"{name(host)}-1", job


def test_the_jobs_beyond_the_canary_ran_through_the_rollout(host: Any) -> None:
    backend()
    in_flight = float(host.file(f"{STATE}/in-flight-after").content_string.strip())
    # The canary had finished its job before the rollout; the other still held its.
    assert in_flight == (0 if is_canary(host) else 1), journal(host)


def test_every_job_completed_on_its_first_claim(host: Any) -> None:
    url, token = backend()
    job_id = json.loads(host.file(f"{STATE}/job-before.json").content_string)["jobId"]
    job = wait_job_ended(url, token, job_id, timeout_s=120, interval_s=1)
    assert job["status"] == "completed", json.dumps(job, indent=2) + journal(host)
    # Never handed back nor claimed again: the rollout did not touch the host running it.
    assert job["attempts"] == 1, job


# --- the poison release: ready, but every job fails ------------------------------------------


def poison_rollout(host: Any) -> dict[str, Any]:
    backend()
    data: dict[str, Any] = json.loads(host.file(f"{STATE}/poison-rollout.json").content_string)
    data["out"] = ANSI.sub("", data["stdout"] + "\n" + data["stderr"])
    return data


def test_the_poison_release_stopped_at_the_canary_smoke_job(host: Any) -> None:
    seen = poison_rollout(host)
    out = seen["out"]
    words = " ".join(out.split())
    assert seen["rc"] != 0, out[-3000:]
    # It passed /healthz and /readyz: only the smoke job failed, and the canary rolled back.
    assert "Run the smoke job on fondation-worker-1" in words, out[-3000:]
    assert "Rolled back to the previous release" in words, out[-3000:]
    assert re.search(r"its replicas are\s+healthy", words), out[-3000:]
    assert recap(out, canary(host))["failed"] == 1, out[-3000:]
    worker_play = seen["stdout"].split(WORKER_PLAY, 1)[1].split("PLAY RECAP", 1)[0]
    assert ("[" + name(host) + "]" in worker_play) == is_canary(host), worker_play[-3000:]
    assert seen["stdout"].count(WORKER_PLAY) == 1, out[-3000:]  # no later batch started


def test_the_smoke_job_ran_on_the_canary_only_and_died(host: Any) -> None:
    url, token = backend()
    out = poison_rollout(host)["out"]
    match = re.search(r"job (\S+) dead", out)
    assert match, out[-3000:]
    job = get_job(url, token, match.group(1))
    assert job["status"] == "dead", job
    assert job["attempts"] == 1, job
    assert job["targetWorkerId"] == f"{canary(host)}-1", job
    assert job["lockedBy"] == f"{canary(host)}-1", job
    assert job["userId"] == "rollout-smoke", job


def test_no_host_keeps_the_poison_image(host: Any) -> None:
    backend()
    variants = host.run(
        "docker image ls --filter label=org.fondation.test-variant=poison --format '{{.ID}}'"
    ).stdout.strip()
    assert variants == "", variants  # B's deploy pruned it on the canary; no other host got it
