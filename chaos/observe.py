"""Watching the run: job state changes (dev backend dump), the containers' process tables and
their workspaces (secrets check), and the fake claude's shared log (executions)."""

from __future__ import annotations

import contextlib
import json
import threading
import time
from pathlib import Path
from typing import Any

import docker
import httpx

from fondation_worker.contract import LEASED_STATUSES, TERMINAL_STATUSES

from .cluster import TEMP_DIR, Cluster, Lifecycle
from .models import Execution, Observation, SecretHit


class StatePoller:
    """Dumps the jobs table every ``interval_s`` and keeps each job's changes."""

    def __init__(self, cluster: Cluster, interval_s: float) -> None:
        self.cluster = cluster
        self.interval_s = interval_s
        self.history: dict[str, list[Observation]] = {}
        self.latest: dict[str, Observation] = {}
        self.polls = 0
        self.errors = 0
        self._last_sent: float | None = None  # when the last successful poll was sent
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="state-poller", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=30)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.poll()
            self._stop.wait(self.interval_s)

    def poll(self) -> None:
        sent = time.time()
        try:
            rows = self.cluster.dump("jobs")
        except (httpx.HTTPError, ValueError, KeyError):
            self.errors += 1
            return
        now = time.time()
        with self._lock:
            self.polls += 1
            since, self._last_sent = self._last_sent, sent
            for row in rows:
                seen = Observation(
                    t=now,
                    since=since,
                    status=row["status"],
                    locked_by=row.get("lockedBy"),
                    generation=int(row.get("leaseGeneration", 0)),
                    lease_until=row.get("leaseUntil"),
                    attempts=int(row.get("attempts", 0)),
                    deferrals=int(row.get("deferrals", 0)),
                    last_error_kind=row.get("lastErrorKind"),
                )
                job_id = str(row["_id"])
                last = self.latest.get(job_id)
                same = {"t", "since"}
                if last is None or last.model_dump(exclude=same) != seen.model_dump(exclude=same):
                    self.history.setdefault(job_id, []).append(seen)
                    self.latest[job_id] = seen

    def status_of(self, job_id: str) -> str | None:
        with self._lock:
            seen = self.latest.get(job_id)
        return seen.status if seen else None

    def held_by(self, worker_id: str) -> list[str]:
        """Jobs claimed or running under ``worker_id`` as last seen."""
        with self._lock:
            return [
                job_id
                for job_id, seen in self.latest.items()
                if seen.status in LEASED_STATUSES and seen.locked_by == worker_id
            ]

    def in_progress(self) -> list[str]:
        with self._lock:
            return [j for j, s in self.latest.items() if s.status in LEASED_STATUSES]

    def all_terminal(self, job_ids: list[str]) -> bool:
        with self._lock:
            return all(
                self.latest.get(j) is not None and self.latest[j].status in TERMINAL_STATUSES
                for j in job_ids
            )


def find_secrets(text: str, secrets: dict[str, str], where: str) -> list[SecretHit]:
    return [SecretHit(where=where, secret=name) for name, value in secrets.items() if value in text]


# A scan that runs inside a container: secrets come on stdin, never in argv. It prints the
# number of files seen, and the paths holding a secret (with the secret's name).
_SCAN = """
import json, os, sys
secrets = json.loads(sys.stdin.read())
root = sys.argv[1]
files, hits = 0, []
for base, dirs, names in os.walk(root):
    for name in names:
        path = os.path.join(base, name)
        files += 1
        try:
            if os.path.islink(path) or os.path.getsize(path) > 8 << 20:
                continue
            data = open(path, 'rb').read()
        except OSError:
            continue
        for key, value in secrets.items():
            if value.encode() in data:
                hits.append([path, key])
print(json.dumps({"files": files, "hits": hits}))
"""

# Lists what is left under TEMP_DIR: everything but the worker's own empty ``jobs`` dir.
_LEFTOVERS = """
import json, os
root = %r
left = []
for base, dirs, names in os.walk(root):
    for name in dirs + names:
        path = os.path.join(base, name)
        if path != os.path.join(root, "jobs"):
            left.append(path)
print(json.dumps(left))
"""


class Sampler:
    """Every ``interval_s``: each worker's process table (``docker top``: the argv of every
    process) and, every few rounds, a secrets scan of its TEMP_DIR."""

    def __init__(self, cluster: Cluster, interval_s: float = 1.0, scan_every: int = 4) -> None:
        self.cluster = cluster
        self.interval_s = interval_s
        self.scan_every = scan_every
        self.process_samples = 0
        self.processes_seen = 0
        self.git_processes_seen = 0
        self.workspace_scans = 0
        self.workspace_files_seen = 0
        self.hits: list[SecretHit] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="sampler", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=60)

    def _run(self) -> None:
        rounds = 0
        while not self._stop.is_set():
            rounds += 1
            for worker in self.cluster.workers:
                self._top(worker)
                if rounds % self.scan_every == 0:
                    self.scan_workspace(worker)
            self._stop.wait(self.interval_s)

    def _top(self, worker: Any) -> None:
        try:
            table = worker.container.top(ps_args="-eo pid,args")
        except docker.errors.APIError:
            return  # not running right now (a fault)
        self.process_samples += 1
        for row in table.get("Processes") or []:
            args = " ".join(row[1:])
            self.processes_seen += 1
            if "git" in args.split(" ")[0] or " git " in f" {args} ":
                self.git_processes_seen += 1
            self.hits += find_secrets(args, self.cluster.secrets.values, f"ps {worker.name}")

    def scan_workspace(self, worker: Any) -> None:
        try:
            exec_id = self.cluster.docker.api.exec_create(
                worker.holder.id,
                ["/opt/venv/bin/python", "-c", _SCAN, TEMP_DIR],
                stdin=True,
                user="10001",
            )
            sock = self.cluster.docker.api.exec_start(exec_id, socket=True)
            raw = sock._sock  # the attached stream
            raw.sendall(json.dumps(self.cluster.secrets.values).encode())
            raw.shutdown(1)
            output = b""
            while chunk := raw.recv(65536):
                output += chunk
            raw.close()
        except (docker.errors.APIError, OSError):
            return
        # Multiplexed stream frames: 8-byte headers before each chunk.
        text = _demux(output)
        with contextlib.suppress(ValueError, KeyError):
            data = json.loads(text.strip().splitlines()[-1])
            self.workspace_scans += 1
            self.workspace_files_seen += int(data["files"])
            for path, name in data["hits"]:
                self.hits.append(SecretHit(where=f"workspace {worker.name}: {path}", secret=name))


def _demux(data: bytes) -> str:
    out = b""
    while len(data) >= 8 and data[0] in (1, 2):
        size = int.from_bytes(data[4:8], "big")
        if data[0] == 1:
            out += data[8 : 8 + size]
        data = data[8 + size :]
    return (out or data).decode(errors="replace")


def temp_dir_leftovers(cluster: Cluster) -> dict[str, list[str]]:
    """What each worker left in its TEMP_DIR (should be nothing but empty directories)."""
    left: dict[str, list[str]] = {}
    for worker in cluster.workers:
        try:
            left[worker.name] = json.loads(cluster.holder_python(worker, _LEFTOVERS % TEMP_DIR))
        except (RuntimeError, ValueError) as exc:
            left[worker.name] = [f"(cannot list: {exc})"]
    return left


def read_executions(log_dir: Path, lifecycle: list[Lifecycle], run_end: float) -> list[Execution]:
    """Pair the fake claude's start and end records. A run without an end record ended when
    its worker container was killed or stopped next (all its processes died then); failing
    that it counts as running until the end of the run (the conservative choice)."""
    starts: dict[str, dict[str, Any]] = {}
    ends: dict[str, dict[str, Any]] = {}
    for path in sorted(log_dir.glob("*.jsonl")):
        for line in path.read_text(errors="replace").splitlines():
            with contextlib.suppress(ValueError):
                record = json.loads(line)
                key = str(record["run"])
                (starts if record["event"] == "start" else ends)[key] = record
    executions: list[Execution] = []
    for key, start in starts.items():
        if not start.get("job"):
            continue  # auth probes
        end = ends.get(key)
        worker = str(start["worker"]).removeprefix("chaos-")
        if end is not None:
            end_t, known, outcome = float(end["t"]), True, str(end.get("outcome", "?"))
        else:
            deaths = [
                e.t
                for e in lifecycle
                if e.worker == worker
                and e.what in ("killed", "stopped", "crashed")
                and e.t >= float(start["t"])
            ]
            end_t, known, outcome = (
                (min(deaths), False, "died")
                if deaths
                else (
                    run_end,
                    False,
                    "no end",
                )
            )
        executions.append(
            Execution(
                job=str(start["job"]),
                worker=worker,
                host=str(start["host"]),
                pid=int(start["pid"]),
                step=str(start["step"]),
                kind=str(start.get("kind", "?")),
                start=float(start["t"]),
                end=end_t,
                end_known=known,
                outcome=outcome,
            )
        )
    executions.sort(key=lambda e: e.start)
    return executions
