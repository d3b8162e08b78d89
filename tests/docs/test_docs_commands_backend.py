"""The CLI commands the docs quote, run as written against a dev backend of the test session
(RUN_BY in tests/docs/commands.py gives them to these tests).

- OPERATIONS "Operator commands from your machine": `CONVEX_URL` and the operator token read
  from the terminal, and nothing else (no worker token anywhere), then `status`, `stuck` and
  `cancel` as the RUNBOOK's "A job must be stopped" describes them.
- `fondation-worker check` and `status` as a replica runs them: the worker's settings, no
  operator token; `check` prints the lines RUNBOOK quotes, for a good and a refused token.
- README's `fondation-worker enqueue --wait`: the job followed to its documents by a worker.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.docs.commands import DocShell, shell_env
from tests.support import (
    FAKE_CLAUDE,
    SAMPLE_FILES,
    TEST_OPERATOR_TOKEN,
    TEST_WORKER_TOKEN,
    DevBackend,
)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

REPO = "https://github.com/acme/widgets"


def operator_env(home: Path) -> dict[str, str]:
    """An operator's shell with the controller's venv active; no worker setting at all."""
    env = shell_env(home=home)
    env["PATH"] = f"{Path(sys.executable).parent}:{env['PATH']}"
    return env


def test_the_operator_commands_on_an_operators_machine(
    documented: DocShell, dev_backend: DevBackend, tmp_path: Path
) -> None:
    job_id = dev_backend.enqueue(REPO, user_id="ada")  # pending: no worker runs here
    ran = documented.run(
        [
            "export CONVEX_URL=https://<deployment>.convex.cloud",
            "read -rs OPERATOR_TOKEN && export OPERATOR_TOKEN",
            "fondation-worker status",
            "fondation-worker stuck",
            "fondation-worker cancel <job id>",
            "fondation-worker cancel <job id> --yes",
            # RUNBOOK "A job must be stopped", Verify: the same command again.
            "fondation-worker cancel <job id>",
        ],
        env=operator_env(tmp_path),
        replace={"https://<deployment>.convex.cloud": dev_backend.url, "<job id>": job_id},
        stdin=TEST_OPERATOR_TOKEN + "\n",
    )
    url, token, status, stuck, ask, cancel, verify = ran
    assert (url.returncode, url.output) == (0, "")
    assert (token.returncode, token.output) == (0, "")  # read -s echoes nothing
    assert status.returncode == 0, status.output
    assert re.search(r"^pending\s+1$", status.output, re.MULTILINE), status.output
    # RUNBOOK "Queue stuck" reads these two lines of the table.
    assert re.search(r"^in progress\s+0$", status.output, re.MULTILINE), status.output
    assert re.search(r"^oldest ready job waiting\s+\S", status.output, re.MULTILINE)
    assert stuck.returncode == 0, stuck.output
    assert stuck.output.startswith("no stuck jobs ("), stuck.output
    assert ask.returncode == 1, ask.output
    assert job_id in ask.output
    assert ask.output.rstrip().endswith("re-run with --yes to cancel"), ask.output
    assert cancel.returncode == 0, cancel.output
    assert cancel.output.rstrip().endswith(f"job {job_id} canceled"), cancel.output
    assert verify.returncode == 0, verify.output
    assert "already ended (canceled)" in verify.output, verify.output
    assert dev_backend.job(job_id)["status"] == "canceled"
    for result in ran:
        assert "config error" not in result.output
        assert TEST_OPERATOR_TOKEN not in result.output


def replica_env(backend: DevBackend, home: Path, worker_token: str) -> dict[str, str]:
    """The settings a replica has (role's env file): the worker token, never the operator's."""
    env = operator_env(home)
    env.update(
        {
            "CONVEX_URL": backend.url,
            "WORKER_TOKEN": worker_token,
            "TEMP_DIR": str(home / "work"),
            "CLAUDE_BIN": str(FAKE_CLAUDE),
            "MIN_FREE_DISK_MB": "1",
        }
    )
    return env


def test_check_and_status_as_a_replica_runs_them(
    documented: DocShell, dev_backend: DevBackend, tmp_path: Path
) -> None:
    good = replica_env(dev_backend, tmp_path, TEST_WORKER_TOKEN)
    check, status = documented.run(["fondation-worker check", "fondation-worker status"], env=good)
    assert check.returncode == 0, check.output
    lines = check.output.splitlines()
    assert lines[0].startswith("ok    config: valid"), lines
    # The lines RUNBOOK quotes: "Convex unreachable" and "Claude auth expired", Verify.
    assert any(line.startswith("ok    convex: reachable, token accepted") for line in lines)
    assert "ok    claude: a tiny real call succeeded" in lines, lines
    assert status.returncode == 0, status.output
    assert re.search(r"^pending\s+0$", status.output, re.MULTILINE), status.output

    # RUNBOOK "Convex unreachable" and "Rotating a token": a token Convex does not accept.
    old = replica_env(dev_backend, tmp_path, "an-old-worker-token-0123456789")
    [refused] = documented.run(["fondation-worker check"], env=old)
    assert refused.returncode == 1, refused.output
    assert any(
        line.startswith("FAIL  convex: reachable, but the worker token was refused (UNAUTHORIZED)")
        for line in refused.output.splitlines()
    ), refused.output


def test_enqueue_wait_follows_a_job_to_its_documents(
    documented: DocShell,
    dev_backend: DevBackend,
    start_worker: Any,
    git_server: Any,
    tmp_path: Path,
) -> None:
    repo = git_server.add_repo("docs", "sample", SAMPLE_FILES)
    start_worker(dev_backend)
    env = operator_env(tmp_path)
    env.update({"CONVEX_URL": dev_backend.url, "OPERATOR_TOKEN": TEST_OPERATOR_TOKEN})
    # README's form names no repository: the demo passes its own.
    [follow] = documented.run(
        ["fondation-worker enqueue --wait"],
        env=env,
        replace={"--wait": f"{repo} --wait --poll 0.2"},
        timeout=180,
    )
    assert follow.returncode == 0, follow.output
    assert re.search(r"^job \S+ queued$", follow.output, re.MULTILINE), follow.output
    assert re.search(r"^job \S+ completed: [1-9]\d* documents", follow.output, re.MULTILINE), (
        follow.output
    )
