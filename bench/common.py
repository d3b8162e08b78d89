"""Shared pieces of the bench scripts: figure rows, output, and the local stack they measure.

Every bench module measures something real and prints a table (``--json`` prints the rows
for bench/report.py). The stack is the one the integration tests use, started fresh per
module on free loopback ports so modules can run side by side and never touch the
`make deploy` backend (3210): the dev backend (our real convex/ functions), the loopback
HTTPS git server (tests/fakes/git_server.py), the fake ``claude`` (tests/fakes/claude) and
native ``fondation-worker run`` processes with production timings unless a bench says
otherwise. The worker and operator tokens are random per run and only ever travel in
environments (the operator token only to the dev backend and the harness's own client).
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import structlog
from pydantic import SecretStr

from fondation_worker.convex_client import ConvexClient

ROOT = Path(__file__).resolve().parent.parent
TESTS = ROOT / "tests"
FAKE_CLAUDE = TESTS / "fakes" / "claude"
TSX = ROOT / "node_modules" / ".bin" / "tsx"
DEV_BACKEND = ROOT / "devbackend" / "server.ts"
WORKER_BIN = Path(sys.executable).parent / "fondation-worker"
BENCH_BUILD = ROOT / "build" / "bench"


def image_archive() -> Path:
    """The worker image archive under test: BENCH_IMAGE_ARCHIVE (bench/report.py pins it at
    the start, so a `make image` elsewhere mid-run cannot switch images), else the latest."""
    pinned = os.environ.get("BENCH_IMAGE_ARCHIVE")
    latest = ROOT / "build" / "images" / "fondation-worker-latest.tar.gz"
    return Path(pinned) if pinned else latest.resolve()


def archive_image_short_id(archive: Path) -> str | None:
    """The image ID scripts/build-image.sh puts in the archive's name."""
    match = re.search(r"-([0-9a-f]{12,64})\.tar\.gz$", archive.name)
    return match.group(1) if match else None


# The bench's own Convex client logs nothing below warnings: stdout carries the figures.
structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))


# --- figures ---------------------------------------------------------------------------


@dataclass
class Row:
    """One line of the report: a measured figure, its target and baseline when it has them."""

    figure: str
    value: float | None
    unit: str
    target: str = ""  # e.g. "<= 120"; empty: no target, reported for information
    met: bool | None = None
    baseline: str = ""  # e.g. "720/h (fixed 5 s polling)"
    ratio: str = ""  # e.g. "0.17x"
    note: str = ""


def met_at_most(value: float | None, limit: float) -> bool | None:
    return None if value is None else value <= limit


def fmt_value(value: float | None, unit: str) -> str:
    if value is None:
        return "n/a"
    digits = 0 if abs(value) >= 100 else 1 if abs(value) >= 10 else 2
    return f"{value:.{digits}f} {unit}".strip()


def emit(title: str, rows: list[Row]) -> None:
    """``--json``: the rows for bench/report.py; otherwise a plain table."""
    if "--json" in sys.argv:
        print(json.dumps([asdict(r) for r in rows]))
        return
    print(f"== {title}")
    width = max([len(r.figure) for r in rows] + [6])
    for r in rows:
        met = "" if r.met is None else ("met" if r.met else "NOT met")
        extra = "; ".join(x for x in (r.baseline and f"baseline {r.baseline}", r.ratio) if x)
        line = f"{r.figure:<{width}}  {fmt_value(r.value, r.unit):>12}"
        if r.target:
            line += f"  target {r.target}" + (f" ({met})" if met else "")
        if extra:
            line += f"  [{extra}]"
        print(line)
        if r.note:
            print(f"{'':<{width}}  {r.note}")


def log(message: str) -> None:
    """Progress on stderr, so ``--json`` stdout stays one JSON document."""
    print(f"[{time.strftime('%H:%M:%S')}] {Path(sys.argv[0]).stem}: {message}", file=sys.stderr)


def percentile(values: list[float], pct: float) -> float | None:
    """Linear interpolation between closest ranks (numpy's default)."""
    if not values:
        return None
    ordered = sorted(values)
    rank = (len(ordered) - 1) * pct / 100.0
    low, high = math.floor(rank), math.ceil(rank)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def run(cmd: list[str], timeout: float, **kwargs: Any) -> subprocess.CompletedProcess[str]:
    kwargs.setdefault("check", False)
    return subprocess.run(cmd, timeout=timeout, text=True, **kwargs)


# --- the stack -------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def iso_to_epoch(stamp: str) -> float:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


@dataclass
class Backend:
    url: str
    token: SecretStr  # WORKER_TOKEN: the worker functions
    operator_token: SecretStr  # OPERATOR_TOKEN: enqueue and jobs:get
    process: subprocess.Popen[bytes]
    log_path: Path

    def client(self) -> ConvexClient:
        """The worker token's client (claims, metrics)."""
        return ConvexClient(self.url, self.token, timeout_s=10)

    def operator_client(self) -> ConvexClient:
        """The operator token's client (enqueue, jobs:get)."""
        return ConvexClient(self.url, self.operator_token, timeout_s=10)

    def enqueue(self, repo: str) -> str:
        with self.operator_client() as convex:
            job_id: str = convex.enqueue(repo).job_id
        return job_id

    def job(self, job_id: str) -> dict[str, Any]:
        with self.operator_client() as convex:
            value = convex.call(
                "query",
                "jobs:get",
                {"token": self.operator_token.get_secret_value(), "jobId": job_id},
            )
        if not isinstance(value, dict):
            raise RuntimeError(f"job {job_id} not found")
        return value

    def wait_status(self, job_id: str, statuses: set[str], timeout: float) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            job = self.job(job_id)
            if job["status"] in statuses:
                return job
            if time.monotonic() > deadline:
                raise RuntimeError(f"job {job_id} not {statuses} in {timeout} s: {job['status']}")
            time.sleep(0.2)

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(10)


def start_backend(
    workdir: Path, token: SecretStr, operator_token: SecretStr, allowed_hosts: str
) -> Backend:
    port = free_port()
    log_path = workdir / f"devbackend-{port}.log"
    env = {
        **os.environ,
        "WORKER_TOKEN": token.get_secret_value(),
        "OPERATOR_TOKEN": operator_token.get_secret_value(),
        "ALLOWED_REPO_HOSTS": allowed_hosts,
        "DEV_BACKEND_HOST": "127.0.0.1",
        "DEV_BACKEND_PORT": str(port),
    }
    with open(log_path, "wb") as out:
        process = subprocess.Popen(
            [str(TSX), str(DEV_BACKEND)],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    backend = Backend(f"http://127.0.0.1:{port}", token, operator_token, process, log_path)
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"dev backend exited: {log_path.read_text()[-2000:]}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{backend.url}/health", timeout=1).status_code == 200:
                return backend
        time.sleep(0.3)
    backend.stop()
    raise RuntimeError(f"dev backend not healthy in 90 s: {log_path.read_text()[-2000:]}")


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
class Worker:
    name: str
    process: subprocess.Popen[bytes]
    log_path: Path
    health_port: int
    _offset: int = 0
    lines: list[dict[str, Any]] = field(default_factory=list)

    def events(self, name: str | None = None) -> list[dict[str, Any]]:
        with open(self.log_path, encoding="utf-8", errors="replace") as handle:
            handle.seek(self._offset)
            chunk = handle.read()
        complete, sep, _ = chunk.rpartition("\n")
        if sep:
            self._offset += len((complete + "\n").encode("utf-8"))
            for line in complete.splitlines():
                with contextlib.suppress(ValueError):
                    entry = json.loads(line)
                    if isinstance(entry, dict):
                        self.lines.append(entry)
        return [e for e in self.lines if name is None or e.get("event") == name]

    def wait_event(
        self, name: str, timeout: float, where: Callable[[dict[str, Any]], bool] | None = None
    ) -> dict[str, Any]:
        """The first ``name`` event (matching ``where``) in the worker's log."""
        deadline = time.monotonic() + timeout
        while True:
            for entry in self.events(name):
                if where is None or where(entry):
                    return entry
            if self.process.poll() is not None or time.monotonic() > deadline:
                why = "exited" if self.process.poll() is not None else f"waited {timeout} s"
                tail = "\n".join(
                    f"{e.get('ts', '')} {e.get('event')} {e.get('problem', e.get('error', ''))}"
                    for e in self.lines[-15:]
                )
                raise RuntimeError(
                    f"worker {self.name}: no {name} ({why}); its last lines:\n{tail}"
                )
            time.sleep(0.1)

    def metrics(self) -> str:
        return httpx.get(f"http://127.0.0.1:{self.health_port}/metrics", timeout=5).text

    def convex_calls(self) -> float:
        """Total Convex calls so far, every function and outcome (Prometheus counter)."""
        total = 0.0
        for line in self.metrics().splitlines():
            if line.startswith("fondation_worker_convex_calls_total{"):
                total += float(line.rsplit(" ", 1)[1])
        return total

    def rss_kb(self) -> int:
        status = Path(f"/proc/{self.process.pid}/status").read_text()
        match = re.search(r"^VmRSS:\s+(\d+) kB", status, re.MULTILINE)
        if match is None:
            raise RuntimeError("no VmRSS")
        return int(match.group(1))

    def kill9(self) -> None:
        """kill -9 of the worker and everything it started, as a dying container would."""
        family = [self.process.pid, *descendants(self.process.pid)]
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        for pid in family:  # children in their own process groups (claude runs so)
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        self.process.wait(10)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.kill9()


class Stack:
    """A dev backend and a loopback git server, plus the workers started against them."""

    def __init__(self, workdir: Path) -> None:
        sys.path.insert(0, str(TESTS))
        from fakes.git_server import GitServer  # the tests' loopback HTTPS git server

        self.workdir = workdir
        self.token = SecretStr("bench-" + secrets.token_hex(16))
        self.operator_token = SecretStr("bench-op-" + secrets.token_hex(16))
        self.git = GitServer(workdir / "git")
        self.git.start()
        self.backend = start_backend(
            workdir, self.token, self.operator_token, f"github.com,{self.git.host}"
        )
        self.workers: list[Worker] = []

    def add_repo(self, name: str, files: dict[str, str | bytes]) -> str:
        url: str = self.git.add_repo("bench", name, files)
        return url

    def start_worker(self, name: str, wait_healthy: bool = True, **env: str) -> Worker:
        health_port = free_port()
        home = self.workdir / f"home-{name}"
        home.mkdir(exist_ok=True)
        base = {
            "PATH": f"{WORKER_BIN.parent}:{os.environ.get('PATH', '/usr/bin:/bin')}",
            "HOME": str(home),
            "CONVEX_URL": self.backend.url,
            "WORKER_TOKEN": self.token.get_secret_value(),
            "WORKER_ID": f"{name}-{secrets.token_hex(2)}",
            "TEMP_DIR": str(self.workdir / f"tmp-{name}"),
            "MIN_FREE_DISK_MB": "1",
            "ALLOWED_REPO_HOSTS": f"github.com,{self.git.host}",
            "GIT_CA_BUNDLE": str(self.git.cert),
            "CLAUDE_BIN": str(FAKE_CLAUDE),
            "CLAUDE_CONFIG_DIR": str(self.workdir / f"claude-{name}"),
            "CLAUDE_ENV_PASSTHROUGH": "FAKE_CLAUDE_MODE,FAKE_CLAUDE_DELAY",
            "HEALTH_BIND": f"127.0.0.1:{health_port}",
            "LOG_FORMAT": "json",
            "LOG_LEVEL": "debug",
        }
        base.update(env)
        log_path = self.workdir / f"worker-{name}.log"
        with open(log_path, "ab") as out:
            process = subprocess.Popen(
                [str(WORKER_BIN), "run"],
                env=base,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        worker = Worker(name, process, log_path, health_port)
        self.workers.append(worker)
        if wait_healthy:
            deadline = time.monotonic() + 60
            while True:
                if process.poll() is not None:
                    raise RuntimeError(f"worker {name} exited: {log_path.read_text()[-2000:]}")
                with contextlib.suppress(httpx.HTTPError):
                    url = f"http://127.0.0.1:{health_port}/healthz"
                    if httpx.get(url, timeout=2).status_code == 200:
                        break
                if time.monotonic() > deadline:
                    raise RuntimeError(f"worker {name} not healthy in 60 s")
                time.sleep(0.2)
        return worker

    def close(self) -> None:
        for worker in self.workers:
            worker.stop()
        self.backend.stop()
        self.git.stop()


@contextlib.contextmanager
def stack(prefix: str) -> Iterator[Stack]:
    BENCH_BUILD.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f"bench-{prefix}-") as tmp:
        s = Stack(Path(tmp))
        try:
            yield s
        finally:
            s.close()


def for_job(job_id: str) -> Callable[[dict[str, Any]], bool]:
    """A ``wait_event`` filter: events of one job."""

    def match(event: dict[str, Any]) -> bool:
        return event.get("job_id") == job_id

    return match


def claim_time_s(event: dict[str, Any], lease_ms: int) -> float:
    """The backend's claim time (epoch s) from a job.claimed event: leaseUntil - LEASE_MS."""
    return (float(event["lease_until"]) - lease_ms) / 1000.0


def small_repo() -> dict[str, str | bytes]:
    return {
        "README.md": "# Bench\n\nA small project.\n",
        "main.py": "def main() -> None:\n    print('hi')\n",
        "pkg/job.py": "class Job:\n    pass\n",
    }


def thousand_file_repo() -> dict[str, str | bytes]:
    """1,000 source files of about 1.5 KB in 20 packages (about 1.5 MB)."""
    files: dict[str, str | bytes] = {"README.md": "# Big\n\nA 1,000-file project.\n"}
    body = "".join(f"    value_{i} = {i} * 3  # line {i} of a module\n" for i in range(24))
    for i in range(999):
        files[f"pkg{i % 20:02d}/module_{i:04d}.py"] = f"def f_{i}() -> int:\n{body}    return 0\n"
    return files
