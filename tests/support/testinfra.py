"""What the Molecule scenarios' testinfra suites share (molecule/*/tests): the replica's
journal, the image a host runs, its release history, and the jobs the dev backend on the
controller ran (scripts/molecule.sh exports its URL and operator token).

pytest finds this through the repository root on sys.path (``pythonpath`` in pyproject.toml),
which Molecule's verifier runs also read.
"""

from __future__ import annotations

import json
import os
import re
import time
import urllib.request
from typing import Any

import pytest

from fondation_worker.contract import TERMINAL_STATUSES

IMAGE_ENV = "/etc/fondation-worker/image.env"
RELEASES = "/var/lib/fondation-worker/releases"
# The dev backend's fixed local operator token (scripts/devbackend.sh), unless one is given.
LOCAL_OPERATOR_TOKEN = "local-operator-token-not-secret"


def journal(host: Any, unit: str = "fondation-worker@1", lines: int = 60) -> str:
    """The unit's last journal lines, to append to an assertion's message."""
    out = host.run(f"journalctl --no-pager -n {lines} -u '{unit}'").stdout
    return f"\n--- journal of {unit} ---\n{out}"


def image_env(host: Any) -> str:
    """The image ID the replicas run (FONDATION_WORKER_IMAGE in image.env)."""
    content = host.file(IMAGE_ENV).content_string
    match = re.search(r"^FONDATION_WORKER_IMAGE=(\S+)$", content, re.MULTILINE)
    assert match, content
    return match.group(1)


def releases(host: Any) -> list[str]:
    """Image IDs that passed the health gate, oldest first."""
    return list(host.file(RELEASES).content_string.split())


def dev_backend(skip_reason: str) -> tuple[str, str]:
    """The controller's dev backend URL and operator token; skips when no job could run."""
    url = os.environ.get("FONDATION_TEST_CONVEX_URL", "").rstrip("/")
    if not url:
        pytest.skip(f"FONDATION_TEST_CONVEX_URL is not set: {skip_reason}")
    # jobs:get is an operator function: the dev backend's OPERATOR_TOKEN (scripts/molecule.sh)
    return url, os.environ.get("FONDATION_TEST_OPERATOR_TOKEN") or LOCAL_OPERATOR_TOKEN


def get_job(url: str, token: str, job_id: str) -> dict[str, Any]:
    """jobs:get over Convex's plain HTTP API."""
    body = json.dumps(
        {"path": "jobs:get", "args": {"jobId": job_id, "token": token}, "format": "json"}
    ).encode()
    request = urllib.request.Request(
        f"{url}/api/query", data=body, headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        reply: dict[str, Any] = json.loads(response.read())
    assert reply["status"] == "success", reply
    value: dict[str, Any] = reply["value"]
    assert value is not None, f"job {job_id} not found"
    return value


def wait_job_ended(
    url: str, token: str, job_id: str, timeout_s: float = 240, interval_s: float = 2
) -> dict[str, Any]:
    """The job once it is completed, dead or canceled (or as it is after ``timeout_s``)."""
    deadline = time.monotonic() + timeout_s
    job = get_job(url, token, job_id)
    while job["status"] not in TERMINAL_STATUSES and time.monotonic() < deadline:
        time.sleep(interval_s)
        job = get_job(url, token, job_id)
    return job
