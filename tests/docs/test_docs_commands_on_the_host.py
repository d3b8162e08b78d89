"""The commands RUNBOOK and OPERATIONS run *on the host*, run as written on a worker host:
the local target once `make deploy` converged it (RUN_BY in tests/docs/commands.py gives
them to these tests).

They need that deployed target, so they run only when FONDATION_DOCS_TARGET names it:
`make test`'s deploy stage runs this module between its `make deploy` and its
`make clean-local`, as

    FONDATION_DOCS_TARGET=fondation-local pytest tests/docs/test_docs_commands_on_the_host.py

and a bare `pytest` skips it, saying so. With the variable set, a target that is not up
with a healthy replica fails the tests. Each command runs in a bash on the target, as root
(`docker exec -i <target>`); the operator token comes in on stdin (`read -rs`), never in an
argument. The one job they add (to cancel) ends canceled before they return, and the
replicas they restart are healthy again: a second `make deploy` still changes nothing.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator

import pytest
from pydantic import SecretStr

from fondation_worker.convex_client import ConvexClient
from tests.docs.commands import ROOT, DocShell, Ran
from tests.support import wait_until

pytestmark = [pytest.mark.docker, pytest.mark.slow, pytest.mark.timeout(900)]

TARGET = os.environ.get("FONDATION_DOCS_TARGET", "")
# scripts/devbackend.sh's local operator token: public on purpose, it guards only the stand-in.
LOCAL_OPERATOR_TOKEN = "local-operator-token-not-secret"
# A repository the worker cannot fetch here quickly: the job is still active when canceled.
REPO = "https://github.com/octocat/Hello-World"


def on_target(*argv: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["docker", "exec", TARGET, *argv],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def replica_healthy() -> bool:
    active = on_target("systemctl", "is-active", "fondation-worker@1")
    if active.stdout.strip() != "active":
        return False
    probe = on_target("docker", "exec", "fondation-worker-1", "fondation-worker", "healthcheck")
    return probe.returncode == 0


@pytest.fixture(scope="module")
def target() -> Iterator[str]:
    if not TARGET:
        pytest.skip(
            "needs `make deploy`'s target: FONDATION_DOCS_TARGET=fondation-local, set by make "
            "test's deploy stage after make deploy"
        )
    state = subprocess.run(
        ["docker", "inspect", "-f", "{{.State.Running}}", TARGET],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    if state.stdout.strip() != "true":
        pytest.fail(f"FONDATION_DOCS_TARGET={TARGET}, but no such container runs: make deploy")
    try:
        wait_until(replica_healthy, 180, 2)
    except AssertionError:
        pytest.fail(f"{TARGET}: fondation-worker@1 is not up and healthy after make deploy")
    yield TARGET
    wait_until(replica_healthy, 180, 2)  # leave the target as make deploy left it


def run_on_host(
    documented: DocShell,
    commands: list[str],
    *,
    replace: dict[str, str] | None = None,
    stdin: str = "",
    timeout: float = 300,
) -> list[Ran]:
    """Documented commands in one bash on the target, as root, in root's home."""
    return documented.run(
        commands,
        env=dict(os.environ),  # for the docker CLI here; the target's bash has its own
        replace=replace,
        stdin=stdin,
        prefix=["docker", "exec", "-i", "-w", "/root", TARGET],
        timeout=timeout,
    )


def convex() -> ConvexClient:
    """The dev backend make deploy started, as the operator (from this machine)."""
    url = subprocess.run(
        [str(ROOT / "scripts" / "devbackend.sh"), "url"],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    ).stdout.strip()
    return ConvexClient(url, SecretStr(LOCAL_OPERATOR_TOKEN), timeout_s=10)


def test_the_commands_on_a_worker_host(documented: DocShell, target: str) -> None:
    looks = run_on_host(
        documented,
        [
            "systemctl status 'fondation-worker@*'",
            "journalctl -u fondation-worker@1 -n 50 --no-pager",
            "journalctl -u fondation-worker@<i>",
            "docker logs --tail 50 fondation-worker-1",
            "docker logs fondation-worker-<i>",
            "docker exec fondation-worker-1 fondation-worker check",
            "sudo docker exec fondation-worker-1 fondation-worker check",
            "docker exec fondation-worker-1 fondation-worker status",
            "df -h / /var/lib/docker",
            "docker system df",
            "cat /var/lib/fondation-worker/releases",
            "docker images fondation-worker",
            "sudo tar -C /srv -czf claude-creds-$(date +%F).tgz claude-creds",
        ],
        replace={"<i>": "1"},
    )
    for ran in looks:
        assert ran.returncode == 0, (
            f"`{ran.typed}` exited {ran.returncode} on {target}:\n{ran.output}"
        )
    by = {ran.command: ran.output for ran in looks}
    assert "Active: active (running)" in by["systemctl status 'fondation-worker@*'"]
    assert '"event"' in by["docker logs --tail 50 fondation-worker-1"]  # the JSON log lines
    for check in (
        "docker exec fondation-worker-1 fondation-worker check",
        "sudo docker exec fondation-worker-1 fondation-worker check",
    ):
        assert "ok    convex: reachable, token accepted" in by[check], by[check]
    # A replica holds the worker's token only: `status` reads the counts with it.
    assert "completed" in by["docker exec fondation-worker-1 fondation-worker status"]
    releases = by["cat /var/lib/fondation-worker/releases"].split()
    assert releases, "no release passed the gate?"
    assert "fondation-worker" in by["docker images fondation-worker"]
    archive = on_target("sh", "-c", "ls /root/claude-creds-*.tgz && rm /root/claude-creds-*.tgz")
    assert archive.returncode == 0, archive.stdout + archive.stderr

    # RUNBOOK "A job must be stopped": the operator token handed over by name, from stdin.
    with convex() as operator:
        job_id = operator.enqueue(REPO, dedupe_key="docs-on-the-host").job_id
    token = LOCAL_OPERATOR_TOKEN + "\n"
    read, ask, cancel = run_on_host(
        documented,
        [
            "read -rs OPERATOR_TOKEN && export OPERATOR_TOKEN",
            "docker exec -e OPERATOR_TOKEN fondation-worker-1 fondation-worker cancel <job id>",
            "docker exec -e OPERATOR_TOKEN fondation-worker-1 fondation-worker cancel <job id> "
            "--yes",
        ],
        replace={"<job id>": job_id},
        stdin=token,
    )
    assert (read.returncode, read.output) == (0, "")
    assert "config error" not in ask.output + cancel.output
    assert job_id in ask.output, ask.output
    assert (ask.returncode, ask.output.rstrip().splitlines()[-1]) == (
        1,
        "re-run with --yes to cancel",
    ), ask.output
    assert cancel.returncode == 0, cancel.output
    last = cancel.output.rstrip().splitlines()[-1]
    assert last == f"job {job_id} canceled" or "cancel requested" in last, cancel.output

    def canceled() -> bool:
        with convex() as operator:
            job = operator.get_job(job_id)
        return job is not None and job.status == "canceled"

    wait_until(canceled, 120, 1)
    _, verify = run_on_host(
        documented,
        [
            "read -rs OPERATOR_TOKEN && export OPERATOR_TOKEN",
            "docker exec -e OPERATOR_TOKEN fondation-worker-1 fondation-worker cancel <job id>",
        ],
        replace={"<job id>": job_id},
        stdin=token,
    )
    assert verify.returncode == 0, verify.output
    assert "already ended (canceled)" in verify.output, verify.output
    for ran in (read, ask, cancel, verify):
        assert LOCAL_OPERATOR_TOKEN not in ran.output


def test_the_restarts_on_a_worker_host(documented: DocShell, target: str) -> None:
    for command in (
        "systemctl restart fondation-worker@<i>",
        "sudo systemctl restart 'fondation-worker@*'",
    ):
        before = on_target("docker", "inspect", "-f", "{{.Id}}", "fondation-worker-1").stdout
        replace = {"<i>": "1"} if "<i>" in command else None
        [restart] = run_on_host(documented, [command], replace=replace)
        assert restart.returncode == 0, restart.output
        wait_until(replica_healthy, 180, 2)
        after = on_target("docker", "inspect", "-f", "{{.Id}}", "fondation-worker-1").stdout
        assert after != before, f"`{command}` left the same container running"
