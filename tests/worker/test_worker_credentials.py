"""One credential per worker, end to end: two real workers against the dev backend (our
real convex/ functions), each with its own credential issued by ``fondation-worker
credentials issue``. One worker's credential is revoked while it runs a job: that worker
is refused from its next call on (it fences its job and stops claiming), its in-flight job
comes back when the lease expires, and the other worker, which never notices, runs it and
the jobs queued after it.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from fondation_worker.worker_credential import credential_hash, is_credential
from tests.support import (
    FAKE_CLAUDE,
    SAMPLE_FILES,
    SHORT_LEASE,
    TEST_OPERATOR_TOKEN,
    TEST_WORKER_TOKEN,
    WORKER_BIN,
    DevBackend,
    enqueue,
    get_job,
    read_claude_log,
    wait_status,
    wait_until,
)

pytestmark = pytest.mark.integration


def cli(backend: DevBackend, tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {
        "PATH": os.environ["PATH"],
        "HOME": str(tmp_path),
        "CONVEX_URL": backend.url,
        "WORKER_TOKEN": TEST_WORKER_TOKEN,
        "OPERATOR_TOKEN": TEST_OPERATOR_TOKEN,
        "TEMP_DIR": str(tmp_path / "cli-tmp"),
        "CLAUDE_BIN": str(FAKE_CLAUDE),
    }
    return subprocess.run(
        [str(WORKER_BIN), *args], env=env, capture_output=True, text=True, timeout=60, check=False
    )


def issue(backend: DevBackend, tmp_path: Path, worker_id: str, host: str) -> str:
    """``credentials issue --output``: the credential, read back from its 0600 env file."""
    path = tmp_path / f"{worker_id}.env"
    proc = cli(
        backend, tmp_path, "credentials", "issue", worker_id, "--host", host, "--output", str(path)
    )
    assert proc.returncode == 0, proc.stderr
    assert path.stat().st_mode & 0o777 == 0o600
    line = path.read_text()
    assert line.startswith("WORKER_TOKEN=")
    assert line.endswith("\n")
    credential = line.removeprefix("WORKER_TOKEN=").strip()
    assert is_credential(credential)
    assert credential not in proc.stdout + proc.stderr
    assert credential_hash(credential)[:12] in proc.stderr  # the fingerprint
    return credential


def listed(backend: DevBackend, tmp_path: Path, *extra: str) -> list[dict[str, Any]]:
    proc = cli(backend, tmp_path, "credentials", "list", "--json", *extra)
    assert proc.returncode == 0, proc.stderr
    value = json.loads(proc.stdout)
    assert isinstance(value, list)
    return value


def test_revoking_one_worker_leaves_the_other_working(
    session_dev_backend: DevBackend,
    start_worker: Any,
    git_server: Any,
    tmp_path: Path,
    fake_claude_log: Path,
) -> None:
    backend = session_dev_backend
    repo = git_server.add_repo("creds", "widgets", SAMPLE_FILES)
    # Unique ids: the session backend is shared with other tests.
    suffix = tmp_path.name[-8:].replace("_", "-")
    id_a, id_b = f"host-a-{suffix}-1", f"host-b-{suffix}-1"
    cred_a = issue(backend, tmp_path, id_a, f"host-a-{suffix}")
    cred_b = issue(backend, tmp_path, id_b, f"host-b-{suffix}")
    assert {c["workerId"] for c in listed(backend, tmp_path)} >= {id_a, id_b}
    assert TEST_OPERATOR_TOKEN not in json.dumps(listed(backend, tmp_path))

    # A credential is refused under another worker id: `check` says so.
    mismatch = subprocess.run(
        [str(WORKER_BIN), "check", "--claude-timeout", "5"],
        env={
            "PATH": os.environ["PATH"],
            "HOME": str(tmp_path),
            "CONVEX_URL": backend.url,
            "WORKER_TOKEN": cred_a,
            "WORKER_ID": id_b,
            "TEMP_DIR": str(tmp_path / "check-tmp"),
            "CLAUDE_BIN": str(FAKE_CLAUDE),
            "MIN_FREE_DISK_MB": "1",
        },
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert (
        f"FAIL  convex: reachable, but the credential belongs to worker {id_a}" in mismatch.stdout
    )

    # Worker A takes the first job and hangs in its chapters step.
    worker_a = start_worker(
        backend,
        "a",
        WORKER_ID=id_a,
        WORKER_TOKEN=cred_a,
        FAKE_CLAUDE_MODE="hang@chapters",
        **SHORT_LEASE,
    )
    first = enqueue(backend, repo, branch="main")
    wait_until(
        lambda: any(
            e["event"] == "hang" and e["job"] == first for e in read_claude_log(fake_claude_log)
        ),
        60,
    )
    assert get_job(backend, first)["lockedBy"] == id_a
    # Worker B starts and works.
    worker_b = start_worker(backend, "b", WORKER_ID=id_b, WORKER_TOKEN=cred_b, **SHORT_LEASE)
    second = enqueue(backend, repo, branch="main")
    assert wait_status(backend, second, {"completed", "dead"}, 90)["lockedBy"] == id_b

    # One command revokes host A.
    revoked = cli(
        backend, tmp_path, "credentials", "revoke", "--host", f"host-a-{suffix}", "--yes", "--json"
    )
    assert revoked.returncode == 0, revoked.stderr
    assert [c["workerId"] for c in json.loads(revoked.stdout)] == [id_a]
    assert [c["workerId"] for c in listed(backend, tmp_path, "--host", f"host-a-{suffix}")] == []

    # A's next heartbeat is refused: it fences its job (kills the hanging step) ...
    fenced = worker_a.wait_event("lease.fenced", 30)
    assert "UNAUTHORIZED" in fenced["reason"] or "Unauthorized" in fenced["reason"]
    # ... the job comes back when the lease expires and B runs it to completion.
    back = wait_status(backend, first, {"completed", "dead"}, 120)
    assert (back["status"], back["lockedBy"], back["attempts"]) == ("completed", id_b, 2)
    # B never noticed, and keeps taking work; A takes none and says why on /readyz.
    third = enqueue(backend, repo, branch="main")
    assert wait_status(backend, third, {"completed", "dead"}, 90)["lockedBy"] == id_b
    assert worker_b.healthy()
    ready = worker_a.get("/readyz")
    assert ready.status_code == 503
    assert "refused" in json.dumps(ready.json())
    assert not worker_b.events("lease.fenced")
    for worker in (worker_a, worker_b):
        logs = worker.log_path.read_text()
        assert cred_a not in logs
        assert cred_b not in logs
