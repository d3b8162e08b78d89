"""The operator credential is fail-closed, over HTTP against the dev backend.

Two dev backends: one with ``OPERATOR_TOKEN`` set, one without any. On both, the worker
token is refused by every operator function (enqueue, get, listByUser, cancel with a token,
the docs reads, ``operator:*``) and changes nothing; without an operator token the refusal
names ``OPERATOR_TOKEN``, and the worker functions, the worker's lease-token read and the
queue metrics keep working. The operator token runs every operator function. The CLI's
operator commands carry the refusal to the operator, and run with CONVEX_URL and
OPERATOR_TOKEN alone (no WORKER_TOKEN on an operator's machine); `run` and `check` refuse to
start without WORKER_TOKEN and name only it.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

from fondation_worker.convex_client import ConvexClient
from fondation_worker.models import Doc, Summary
from tests.support import (
    FAKE_CLAUDE,
    TEST_OPERATOR_TOKEN,
    TEST_WORKER_TOKEN,
    WORKER_BIN,
    DevBackend,
    claim,
    start_dev_backend,
)

pytestmark = pytest.mark.integration

REPO = "https://github.com/acme/widgets"


@pytest.fixture(scope="module")
def with_operator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevBackend]:
    backend = start_dev_backend(
        tmp_path_factory.mktemp("operator-set"), "github.com", reclaim_ms=3_600_000
    )
    yield backend
    backend.stop()


@pytest.fixture(scope="module")
def without_operator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevBackend]:
    # The deployment never got an OPERATOR_TOKEN (empty counts as unset, as on Convex).
    backend = start_dev_backend(
        tmp_path_factory.mktemp("operator-unset"),
        "github.com",
        reclaim_ms=3_600_000,
        extra_env={"OPERATOR_TOKEN": "", "OPERATOR_TOKEN_NEXT": ""},
    )
    yield backend
    backend.stop()


def call(backend: DevBackend, kind: str, path: str, args: dict[str, Any]) -> dict[str, Any]:
    """One raw Convex HTTP call; the reply envelope as is."""
    reply = httpx.post(
        f"{backend.url}/api/{kind}",
        json={"path": path, "args": args, "format": "json"},
        timeout=10,
    )
    assert reply.status_code == 200, reply.text
    body: dict[str, Any] = reply.json()
    return body


def operator_calls(token: str, job_id: str) -> list[tuple[str, str, dict[str, Any]]]:
    """Every operator-only function, with ``token`` as the credential."""
    return [
        ("mutation", "jobs:enqueue", {"token": token, "repoUrl": REPO, "userId": "ada"}),
        ("query", "jobs:get", {"token": token, "jobId": job_id}),
        ("query", "jobs:listByUser", {"token": token, "userId": "ada"}),
        ("mutation", "jobs:cancel", {"token": token, "jobId": job_id}),
        ("query", "docs:listByJob", {"token": token, "jobId": job_id}),
        ("query", "docs:getDoc", {"token": token, "jobId": job_id, "slug": "index"}),
        ("query", "operator:listStuck", {"token": token}),
        ("mutation", "operator:reclaimNow", {"token": token}),
        ("mutation", "operator:requeue", {"token": token, "jobId": job_id}),
    ]


def completed_job(backend: DevBackend) -> str:
    """A job of user ada, run to completion by a worker with one document."""
    with backend.operator_client() as operator:
        job_id = operator.enqueue(REPO, user_id="ada").job_id
    with backend.client() as worker:
        claimed = claim(worker, "w1", 60_000)
        assert claimed is not None
        assert claimed.job_id == job_id
        doc = Doc(slug="index", title="Index", kind="toc", order=0, content="# Index\n")
        worker.complete(
            job_id, claimed.lease_token, "run-1", Summary(docs_count=1, duration_ms=5), [doc]
        )
    return job_id


def dump_jobs(backend: DevBackend) -> list[dict[str, Any]]:
    return sorted(backend.dump("jobs"), key=lambda j: str(j.get("_id")))


def test_the_worker_token_is_refused_by_every_operator_function(
    with_operator: DevBackend,
) -> None:
    with_operator.reset()
    job_id = completed_job(with_operator)
    before = dump_jobs(with_operator)
    for kind, path, args in operator_calls(TEST_WORKER_TOKEN, job_id):
        body = call(with_operator, kind, path, args)
        assert body["status"] == "error", (path, body)
        assert body["errorData"] == {"code": "UNAUTHORIZED", "message": "unauthorized"}, path
    assert dump_jobs(with_operator) == before  # nothing enqueued, canceled or requeued


def test_the_operator_token_runs_every_operator_function(with_operator: DevBackend) -> None:
    with_operator.reset()
    job_id = completed_job(with_operator)
    replies = {
        path: call(with_operator, kind, path, args)
        for kind, path, args in operator_calls(TEST_OPERATOR_TOKEN, job_id)
    }
    ok = {path for path, body in replies.items() if body["status"] == "success"}
    # requeue is authorized, but the job is completed, not dead
    assert ok == {path for _, path, _ in operator_calls("", "")} - {"operator:requeue"}
    assert replies["operator:requeue"]["errorData"]["code"] == "INVALID_STATE"
    assert replies["jobs:get"]["value"]["status"] == "completed"
    assert [d["slug"] for d in replies["docs:listByJob"]["value"]] == ["index"]
    assert replies["docs:getDoc"]["value"]["content"] == "# Index\n"
    assert replies["jobs:cancel"]["value"] == {"status": "completed"}


def test_without_an_operator_token_every_operator_call_is_refused_by_name(
    without_operator: DevBackend,
) -> None:
    without_operator.reset()
    # A user signs in in production; here the job is put in through the dev admin identity.
    job_id = call_as_dev_user(without_operator, "ada")
    before = dump_jobs(without_operator)
    for token in (TEST_WORKER_TOKEN, TEST_OPERATOR_TOKEN):
        for kind, path, args in operator_calls(token, job_id):
            body = call(without_operator, kind, path, args)
            assert body["status"] == "error", (path, body)
            assert body["errorData"]["code"] == "UNAUTHORIZED", path
            message = body["errorData"]["message"]
            assert "no operator token is configured" in message, path
            assert "OPERATOR_TOKEN" in message, path
    assert dump_jobs(without_operator) == before


def call_as_dev_user(backend: DevBackend, user: str) -> str:
    """jobs:enqueue as a signed-in user (the dev backend's admin-mode identity)."""
    reply = httpx.post(
        f"{backend.url}/api/mutation",
        json={"path": "jobs:enqueue", "args": {"repoUrl": REPO}, "format": "json"},
        headers={"Authorization": f"Bearer dev:{user}"},
        timeout=10,
    )
    body = reply.json()
    assert body["status"] == "success", body
    job_id: str = body["value"]["jobId"]
    return job_id


def test_without_an_operator_token_the_worker_still_works(without_operator: DevBackend) -> None:
    without_operator.reset()
    job_id = call_as_dev_user(without_operator, "ada")
    with ConvexClient(without_operator.url, SecretStr(TEST_WORKER_TOKEN), timeout_s=5) as worker:
        claimed = claim(worker, "w1", 60_000)
        assert claimed is not None
        assert claimed.job_id == job_id
        worker.start(job_id, claimed.lease_token)
        held = worker.get_job(job_id, claimed.lease_token)
        assert held is not None
        assert held.status == "running"
        assert worker.queue_metrics()["counts"]["running"] == 1
        worker.complete(job_id, claimed.lease_token, "run-1", Summary(docs_count=0, duration_ms=5))


def operator_cli(backend: DevBackend, tmp_path: Path, *args: str, **env: str) -> Any:
    """The console script with CONVEX_URL, the worker's token (as inside a replica) and
    ``env``."""
    return cli(backend, tmp_path, *args, WORKER_TOKEN=TEST_WORKER_TOKEN, **env)


def cli(backend: DevBackend, tmp_path: Path, *args: str, **env: str) -> Any:
    """The console script with CONVEX_URL and exactly ``env`` besides."""
    return subprocess.run(
        [str(WORKER_BIN), *args],
        env={
            "PATH": os.environ["PATH"],
            "HOME": str(tmp_path),
            "CONVEX_URL": backend.url,
            "TEMP_DIR": str(tmp_path / "cli-tmp"),
            "CLAUDE_BIN": str(FAKE_CLAUDE),
            **env,
        },
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_the_cli_operator_commands_need_the_operator_token(
    with_operator: DevBackend, without_operator: DevBackend, tmp_path: Path
) -> None:
    with_operator.reset()
    # No OPERATOR_TOKEN on the host: a config error, no call with the worker token.
    missing = operator_cli(with_operator, tmp_path, "stuck")
    assert missing.returncode == 2, missing.stdout + missing.stderr
    [line] = missing.stderr.splitlines()  # names OPERATOR_TOKEN only: the worker's is no use
    assert line.startswith("fondation-worker: config error: OPERATOR_TOKEN: is required by ")
    assert "WORKER_TOKEN:" not in line
    # The worker token handed over as OPERATOR_TOKEN: refused by Convex.
    posing = operator_cli(with_operator, tmp_path, "stuck", OPERATOR_TOKEN=TEST_WORKER_TOKEN)
    assert posing.returncode == 1, posing.stdout + posing.stderr
    assert "operator:listStuck: unauthorized" in posing.stderr
    good = operator_cli(with_operator, tmp_path, "stuck", OPERATOR_TOKEN=TEST_OPERATOR_TOKEN)
    assert good.returncode == 0, good.stdout + good.stderr
    assert good.stdout.startswith("no stuck jobs")
    # A deployment without OPERATOR_TOKEN: the operator reads why.
    unset = operator_cli(without_operator, tmp_path, "stuck", OPERATOR_TOKEN=TEST_OPERATOR_TOKEN)
    assert unset.returncode == 1, unset.stdout + unset.stderr
    assert "no operator token is configured on this deployment: set OPERATOR_TOKEN" in (
        unset.stderr
    )
    for proc in (missing, posing, good, unset):
        assert TEST_WORKER_TOKEN not in proc.stdout + proc.stderr
        assert TEST_OPERATOR_TOKEN not in proc.stdout + proc.stderr


def test_an_operator_needs_only_convex_url_and_the_operator_token(
    with_operator: DevBackend, tmp_path: Path
) -> None:
    """Every operator command on an operator's machine: no WORKER_TOKEN anywhere."""
    with_operator.reset()
    operator = {"OPERATOR_TOKEN": TEST_OPERATOR_TOKEN}
    queued = cli(with_operator, tmp_path, "enqueue", REPO, "--user-id", "ada", **operator)
    assert queued.returncode == 0, queued.stdout + queued.stderr
    job_id = queued.stdout.split()[1]
    assert queued.stdout == f"job {job_id} queued\n"
    status = cli(with_operator, tmp_path, "status", "--json", **operator)
    assert status.returncode == 0, status.stderr
    assert json.loads(status.stdout)["counts"]["pending"] == 1
    stuck = cli(with_operator, tmp_path, "stuck", **operator)
    assert (stuck.returncode, stuck.stdout.split(" (")[0]) == (0, "no stuck jobs"), stuck.stderr
    reclaim = cli(with_operator, tmp_path, "reclaim", **operator)
    assert reclaim.returncode == 0, reclaim.stderr
    assert reclaim.stdout == "no expired leases: nothing to reclaim\n"
    requeue = cli(with_operator, tmp_path, "requeue", job_id, **operator)
    assert requeue.returncode == 3  # reached Convex: the job is pending, not dead (exit 3)
    assert f"job {job_id} is pending: only a dead job can be requeued" in requeue.stderr
    cancel = cli(with_operator, tmp_path, "cancel", job_id, "--yes", **operator)
    assert cancel.returncode == 0, cancel.stderr
    assert cancel.stdout.endswith(f"job {job_id} canceled\n")
    assert with_operator.job(job_id)["status"] == "canceled"
    for proc in (queued, status, stuck, reclaim, requeue, cancel):
        assert "config error" not in proc.stderr
        assert TEST_OPERATOR_TOKEN not in proc.stdout + proc.stderr


@pytest.mark.parametrize("command", ["run", "check"])
def test_the_worker_commands_need_the_worker_token_and_name_only_it(
    with_operator: DevBackend, tmp_path: Path, command: str
) -> None:
    proc = cli(with_operator, tmp_path, command, OPERATOR_TOKEN=TEST_OPERATOR_TOKEN)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert proc.stderr.splitlines() == [
        "fondation-worker: config error: WORKER_TOKEN: is required by the worker commands "
        "(run, check) but not set: set it to this worker's own credential (the deploy issues "
        "one per replica), or the deployment's shared WORKER_TOKEN during the migration"
    ]
    assert proc.stdout == ""
