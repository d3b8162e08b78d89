"""Native ``fondation-worker run`` processes: their environment, start, JSON log and health
port. The tests' ``start_worker`` fixture and bench's stack both start workers through here."""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import signal
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from .paths import FAKE_CLAUDE, VENV_BIN, WORKER_BIN
from .waiting import wait_until

# The worker's claim polls, every outcome (a prefix for WorkerProcess.metric).
CLAIM_CALLS = 'fondation_worker_convex_calls_total{function="jobs:claimOne"'
# The fake claude's knobs a test may set on the worker's environment.
FAKE_CLAUDE_PASSTHROUGH = (
    "FAKE_CLAUDE_MODE,FAKE_CLAUDE_MODE_FILE,FAKE_CLAUDE_LOG,FAKE_CLAUDE_DELAY,FAKE_CLAUDE_SINK"
)


def descendants(pid: int) -> list[int]:
    """Every live descendant of ``pid`` (from /proc)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            fields = stat.read_text().rsplit(")", 1)[1].split()
            children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found: list[int] = []
    todo = [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


@dataclass
class WorkerProcess:
    name: str
    process: subprocess.Popen[bytes]
    log_path: Path
    health_port: int
    env: dict[str, str] = field(default_factory=dict)
    lines: list[dict[str, Any]] = field(default_factory=list)
    raw: list[str] = field(default_factory=list)
    _offset: int = 0

    def read_logs(self) -> list[dict[str, Any]]:
        """Every log line so far, parsed (a line that is not JSON becomes a ``non-json``
        event); a line still being written waits for its newline."""
        with open(self.log_path, encoding="utf-8", errors="replace") as handle:
            handle.seek(self._offset)
            chunk = handle.read()
        complete, _, _rest = chunk.rpartition("\n")
        if not complete and not chunk.endswith("\n"):
            return self.lines
        self._offset += len((complete + "\n").encode("utf-8")) if complete else 0
        for line in complete.splitlines():
            if not line.strip():
                continue
            self.raw.append(line)
            try:
                entry = json.loads(line)
            except ValueError:
                entry = None
            self.lines.append(
                entry if isinstance(entry, dict) else {"event": "non-json", "line": line}
            )
        return self.lines

    def events(self, name: str | None = None) -> list[dict[str, Any]]:
        return [e for e in self.read_logs() if name is None or e.get("event") == name]

    def wait_event(
        self, name: str, timeout: float = 30, where: Callable[[dict[str, Any]], bool] | None = None
    ) -> dict[str, Any]:
        """The first ``name`` event (matching ``where``); AssertionError with the log's last
        lines when the worker exits first or ``timeout`` passes."""

        def found() -> dict[str, Any] | None:
            for entry in self.events(name):
                if where is None or where(entry):
                    return entry
            if self.process.poll() is not None and not any(
                e.get("event") == name for e in self.read_logs()
            ):
                raise AssertionError(
                    f"{self.name} exited ({self.process.returncode}) before {name}:\n"
                    + "\n".join(self.raw[-30:])
                )
            return None

        try:
            return wait_until(found, timeout)  # type: ignore[no-any-return]
        except AssertionError as exc:
            raise AssertionError(
                f"{exc}; waiting for {name}:\n" + "\n".join(self.raw[-30:])
            ) from None

    # --- the health port -----------------------------------------------------------------

    def get(self, path: str) -> httpx.Response:
        return httpx.get(f"http://127.0.0.1:{self.health_port}{path}", timeout=3)

    def healthy(self) -> bool:
        if self.process.poll() is not None:
            raise AssertionError(
                f"worker exited with {self.process.returncode}:\n{self.log_path.read_text()}"
            )
        with contextlib.suppress(httpx.HTTPError):
            return self.get("/healthz").status_code == 200
        return False

    def metrics(self) -> str:
        return httpx.get(f"http://127.0.0.1:{self.health_port}/metrics", timeout=5).text

    def metric(self, name: str) -> float:
        """The sum of every sample whose line starts with ``name`` (a series name, or a name
        and the start of its labels), from /metrics."""
        total = 0.0
        for line in self.metrics().splitlines():
            if line.startswith(name) and not line.startswith("#"):
                total += float(line.rsplit(" ", 1)[1])
        return total

    def convex_calls(self) -> float:
        """Total Convex calls so far, every function and outcome (Prometheus counter)."""
        return self.metric("fondation_worker_convex_calls_total{")

    def rss_kb(self) -> int:
        status = Path(f"/proc/{self.process.pid}/status").read_text()
        match = re.search(r"^VmRSS:\s+(\d+) kB", status, re.MULTILINE)
        if match is None:
            raise RuntimeError("no VmRSS")
        return int(match.group(1))

    # --- the process ---------------------------------------------------------------------

    def signal(self, sig: int) -> None:
        self.process.send_signal(sig)

    def wait(self, timeout: float) -> int:
        return self.process.wait(timeout)

    def kill9(self, family: bool = False) -> None:
        """kill -9 of the worker; with ``family``, of everything it started too, as a dying
        container would (claude runs in its own process group)."""
        tree = [self.process.pid, *descendants(self.process.pid)] if family else []
        if family:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
        for pid in tree:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        if not family:
            self.process.kill()
        self.process.wait(10)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.kill9(family=True)


def worker_env(
    name: str,
    *,
    convex_url: str,
    worker_token: str,
    workdir: Path,
    home: Path,
    allowed_repo_hosts: str,
    git_ca_bundle: Path,
    health_port: int,
    claude_bin: Path = FAKE_CLAUDE,
) -> dict[str, str]:
    """The environment every native test worker shares: its own temp and Claude dirs under
    ``workdir``, the fake claude, JSON logs on stdout, health on loopback. Timings are the
    caller's (production defaults unless it sets them)."""
    return {
        "PATH": f"{VENV_BIN}:{os.environ.get('PATH', '/usr/bin:/bin')}",
        "HOME": str(home),
        "CONVEX_URL": convex_url,
        "WORKER_TOKEN": worker_token,
        "WORKER_ID": f"{name}-{secrets.token_hex(2)}",
        "TEMP_DIR": str(workdir / f"tmp-{name}"),
        "MIN_FREE_DISK_MB": "1",
        "ALLOWED_REPO_HOSTS": allowed_repo_hosts,
        "GIT_CA_BUNDLE": str(git_ca_bundle),
        "CLAUDE_BIN": str(claude_bin),
        "CLAUDE_CONFIG_DIR": str(workdir / f"claude-config-{name}"),
        "CLAUDE_ENV_PASSTHROUGH": FAKE_CLAUDE_PASSTHROUGH,
        "HEALTH_BIND": f"127.0.0.1:{health_port}",
        "LOG_FORMAT": "json",
        "LOG_LEVEL": "debug",
    }


def launch_worker(
    name: str,
    env: dict[str, str],
    log_path: Path,
    health_port: int,
    *,
    new_session: bool = False,
    healthy_within: float | None = 30,
) -> WorkerProcess:
    """``fondation-worker run`` with exactly ``env``, its output appended to ``log_path``;
    waits for /healthz unless ``healthy_within`` is None."""
    with open(log_path, "ab") as log:
        process = subprocess.Popen(
            [str(WORKER_BIN), "run"],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=new_session,
        )
    worker = WorkerProcess(name, process, log_path, health_port, env)
    if healthy_within is not None:
        try:
            wait_until(worker.healthy, healthy_within)
        except AssertionError:
            worker.stop()
            raise
    return worker


def read_claude_log(path: Path) -> list[dict[str, Any]]:
    """The fake claude's invocation log (FAKE_CLAUDE_LOG), one JSON object per call."""
    if not path.exists():
        return []
    # A line longer than the fake's write buffer lands in several writes: skip the last line
    # until its newline is there.
    complete = path.read_text().rpartition("\n")[0]
    return [json.loads(line) for line in complete.splitlines() if line.strip()]
