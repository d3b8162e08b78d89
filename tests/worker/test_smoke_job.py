"""The rollout's smoke job as roles/fondation_worker/tasks/lib/smoke_job.yml runs it:
``fondation-worker enqueue --wait --target-worker <id> --max-attempts 1 --timeout <s>``
against the dev backend with real worker processes. Only the named worker runs it; a worker
whose every job fails (a poison release) makes it exit 1; a job nobody takes is canceled at
the timeout (exit 4). Molecule's fleet scenario proves the same through the rollout."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.support import SAMPLE_FILES
from tests.support.devbackend import DevBackend
from tests.support.git_server import GitServer
from tests.support.paths import TEST_OPERATOR_TOKEN, TEST_WORKER_TOKEN, WORKER_BIN
from tests.support.waiting import wait_until
from tests.support.worker_process import WorkerProcess

pytestmark = pytest.mark.integration


def smoke(
    backend: DevBackend, repo: str, target: str, tmp_path: Path, timeout_s: int = 60
) -> subprocess.CompletedProcess[str]:
    env = {
        "PATH": os.environ["PATH"],
        "HOME": str(tmp_path),
        "CONVEX_URL": backend.url,
        "WORKER_TOKEN": TEST_WORKER_TOKEN,
        "OPERATOR_TOKEN": TEST_OPERATOR_TOKEN,
        "TEMP_DIR": str(tmp_path / "cli-tmp"),
        "MIN_FREE_DISK_MB": "1",
    }
    argv = [
        str(WORKER_BIN), "enqueue", repo, "--wait", "--poll", "0.2",
        "--target-worker", target, "--user-id", "rollout-smoke", "--max-attempts", "1",
        "--timeout", str(timeout_s),
    ]  # fmt: skip
    return subprocess.run(
        argv, env=env, capture_output=True, text=True, timeout=timeout_s + 60, check=False
    )


def job_id(out: str) -> str:
    first = out.splitlines()[0]
    assert first.startswith("job "), out
    assert first.endswith(" queued"), out
    return first.split()[1]


def test_the_smoke_job_runs_on_its_target_only_and_fails_on_a_poison_worker(
    tmp_path: Path,
    dev_backend: DevBackend,
    git_server: GitServer,
    start_worker: Callable[..., WorkerProcess],
) -> None:
    repo = git_server.add_repo("smoke", "sample", SAMPLE_FILES)
    canary = start_worker(dev_backend, "canary", WORKER_ID="smoke-canary-1")
    other = start_worker(dev_backend, "other", WORKER_ID="smoke-other-1")
    # A release that is ready but fails every job: its git is not git.
    poison = start_worker(dev_backend, "poison", WORKER_ID="smoke-poison-1", GIT_BIN=sys.executable)
    for worker in (canary, other, poison):
        wait_until(lambda w=worker: w.get("/readyz").status_code == 200, 60, 0.2)

    done = smoke(dev_backend, repo, "smoke-canary-1", tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    job = dev_backend.job(job_id(done.stdout))
    assert job["status"] == "completed", job
    assert job["lockedBy"] == "smoke-canary-1", job
    assert job["targetWorkerId"] == "smoke-canary-1", job

    failed = smoke(dev_backend, repo, "smoke-poison-1", tmp_path)
    assert failed.returncode == 1, failed.stdout + failed.stderr
    job = dev_backend.job(job_id(failed.stdout))
    assert job["status"] == "dead", job
    assert job["lockedBy"] == "smoke-poison-1", job
    assert job["attempts"] == 1, job
    assert f"job {job['jobId']} dead" in failed.stdout
    # The healthy workers never took the poison worker's job (nor any other).
    assert other.metric("fondation_worker_jobs_claimed_total") == 0


def test_a_smoke_job_nobody_takes_is_canceled_at_the_timeout(
    tmp_path: Path, dev_backend: DevBackend, git_server: GitServer
) -> None:
    repo = git_server.add_repo("smoke", "lonely", SAMPLE_FILES)
    done = smoke(dev_backend, repo, "nobody-1", tmp_path, timeout_s=2)
    assert done.returncode == 4, done.stdout + done.stderr
    assert "did not end within 2 s: canceled" in done.stdout
    assert dev_backend.job(job_id(done.stdout))["status"] == "canceled"
