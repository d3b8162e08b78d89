"""A test run killed before its teardown (a timeout's SIGKILL) leaves no dev backend behind.

A child Python starts a backend through tests.support's start_dev_backend, as every suite
does, and is then killed with SIGKILL: no fixture teardown, no atexit. The backend, told its
owner's PID (DEV_BACKEND_OWNER_PID), must stop answering within a few seconds.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

REPO_ROOT = Path(__file__).resolve().parents[2]

OWNER = """
import sys, time
from pathlib import Path
from tests.support.devbackend import start_dev_backend
backend = start_dev_backend(Path(sys.argv[1]), "github.com")
print(backend.url, backend.process.pid, flush=True)
time.sleep(600)
"""


def test_the_backend_ends_with_its_killed_owner(tmp_path: Path) -> None:
    owner = subprocess.Popen(
        [sys.executable, "-c", OWNER, str(tmp_path)],
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    backend_pid = 0
    try:
        assert owner.stdout is not None
        url, pid = owner.stdout.readline().split()
        backend_pid = int(pid)
        assert httpx.get(f"{url}/health", timeout=5).status_code == 200
        owner.send_signal(signal.SIGKILL)
        owner.wait(10)
        deadline = time.monotonic() + 10
        gone = False
        while time.monotonic() < deadline and not gone:
            try:
                httpx.get(f"{url}/health", timeout=1)
            except httpx.TransportError:
                gone = True
            else:
                time.sleep(0.2)
        assert gone, f"the dev backend at {url} still answers 10 s after its owner was killed"
    finally:
        if owner.poll() is None:
            owner.kill()
        if backend_pid:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(backend_pid, signal.SIGKILL)  # its own session (start_new_session)
