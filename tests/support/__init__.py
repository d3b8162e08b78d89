"""What the tests, bench and chaos share: the dev backend, native worker processes, the
loopback HTTPS git server (git_server) and the test doubles (fakes/: the fake ``claude``
executables, the scripted Anthropic Messages API, the Scaleway API, Convex's HTTP API for the
CLI's commands).

Import it from the repository root: pytest puts the root on sys.path (``pythonpath`` in
pyproject.toml), and bench and chaos run as modules from there (``python -m bench.pickup``,
``python -m chaos.run``).
"""

from __future__ import annotations

from typing import Any

from fondation_worker.config import Settings

from .devbackend import (
    DevBackend,
    DevBackendError,
    claim,
    enqueue,
    get_job,
    start_dev_backend,
    wait_status,
)
from .paths import (
    CHAOS_CLAUDE,
    FAKE_CLAUDE,
    FAKES,
    REPO_ROOT,
    TEST_OPERATOR_TOKEN,
    TEST_WORKER_TOKEN,
    VENV_BIN,
    WORKER_BIN,
)
from .waiting import free_port, wait_until
from .worker_process import (
    CLAIM_CALLS,
    WorkerProcess,
    launch_worker,
    read_claude_log,
    worker_env,
)

# The lease of tests whose subject is lease expiry (kill -9, a frozen or cut-off worker).
# Every other test runs with a lease that outlasts the multi-second I/O stalls of a busy CI
# machine (Molecule imports images beside the pytest stage): a 3 s lease lost in such a stall
# is a real fence, and it failed a test about something else.
SHORT_LEASE = {"LEASE_MS": "3000", "HEARTBEAT_MS": "500"}

SAMPLE_FILES = {
    "README.md": "# Tiny\n\nA tiny project.\n",
    "main.py": "def main():\n    print('hi')\n",
    "pkg/job.py": "class Job:\n    pass\n",
}


def make_settings(**overrides: Any) -> Settings:
    """Worker settings for in-process tests: the fake claude, a dead Convex URL."""
    values: dict[str, Any] = {
        "convex_url": "http://127.0.0.1:9",
        "worker_token": TEST_WORKER_TOKEN,
        "worker_id": "test-worker",
        "allowed_repo_hosts": ["github.com"],
        "claude_bin": str(FAKE_CLAUDE),
        "min_free_disk_mb": 0,
    }
    values.update(overrides)
    return Settings(**values)


__all__ = [
    "CHAOS_CLAUDE",
    "CLAIM_CALLS",
    "FAKES",
    "FAKE_CLAUDE",
    "REPO_ROOT",
    "SAMPLE_FILES",
    "SHORT_LEASE",
    "TEST_OPERATOR_TOKEN",
    "TEST_WORKER_TOKEN",
    "VENV_BIN",
    "WORKER_BIN",
    "DevBackend",
    "DevBackendError",
    "WorkerProcess",
    "claim",
    "enqueue",
    "free_port",
    "get_job",
    "launch_worker",
    "make_settings",
    "read_claude_log",
    "start_dev_backend",
    "wait_status",
    "wait_until",
    "worker_env",
]
