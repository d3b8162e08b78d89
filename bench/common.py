"""Shared pieces of the bench scripts: figure rows, output, and the local stack they measure.

Every bench module measures something real and prints a table (``--json`` prints the rows
for bench/report.py). The stack is the one the integration tests use, started fresh per
module on free loopback ports so modules can run side by side and never touch the
`make deploy` backend (3210): the dev backend (our real convex/ functions), the loopback
HTTPS git server (tests/support/git_server.py), the fake ``claude`` (tests/support/fakes/claude) and
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
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import structlog
from pydantic import SecretStr

from tests.support import (
    FAKE_CLAUDE,
    REPO_ROOT,
    WorkerProcess,
    free_port,
    launch_worker,
    start_dev_backend,
    worker_env,
)
from tests.support.git_server import GitServer

ROOT = REPO_ROOT
# A native worker process (its events, metrics, RSS; kill9(family=True) as a dying container).
Worker = WorkerProcess
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


def iso_to_epoch(stamp: str) -> float:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


class Stack:
    """A dev backend and a loopback git server, plus the workers started against them."""

    def __init__(self, workdir: Path, admin: bool = False) -> None:
        self.workdir = workdir
        self.token = SecretStr("bench-" + secrets.token_hex(16))
        self.operator_token = SecretStr("bench-op-" + secrets.token_hex(16))
        self.git = GitServer(workdir / "git")
        self.git.start()
        # Production's reclaim schedule; admin endpoints only for a bench that reads the
        # backend's counters (/_dev/stats) or tables: the functions run the same either way.
        self.backend = start_dev_backend(
            workdir,
            f"github.com,{self.git.host}",
            reclaim_ms=None,
            worker_token=self.token.get_secret_value(),
            operator_token=self.operator_token.get_secret_value(),
            admin=admin,
            timeout_s=90,
            client_timeout_s=10,
        )
        self.workers: list[Worker] = []

    def add_repo(self, name: str, files: dict[str, str | bytes]) -> str:
        url: str = self.git.add_repo("bench", name, files)
        return url

    def start_worker(
        self, name: str, wait_healthy: bool = True, claude_bin: Path = FAKE_CLAUDE, **env: str
    ) -> Worker:
        health_port = free_port()
        home = self.workdir / f"home-{name}"
        home.mkdir(exist_ok=True)
        base = worker_env(
            name,
            convex_url=self.backend.url,
            worker_token=self.token.get_secret_value(),
            workdir=self.workdir,
            home=home,
            allowed_repo_hosts=f"github.com,{self.git.host}",
            git_ca_bundle=self.git.cert,
            health_port=health_port,
            claude_bin=claude_bin,
        )
        base.update(env)
        worker = launch_worker(
            name,
            base,
            self.workdir / f"worker-{name}.log",
            health_port,
            new_session=True,
            healthy_within=60 if wait_healthy else None,
        )
        self.workers.append(worker)
        return worker

    def close(self) -> None:
        for worker in self.workers:
            worker.stop()
        self.backend.stop()
        self.git.stop()


@contextlib.contextmanager
def stack(prefix: str, admin: bool = False) -> Iterator[Stack]:
    BENCH_BUILD.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f"bench-{prefix}-") as tmp:
        s = Stack(Path(tmp), admin)
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
