"""Fleet scale: what one job costs Convex as the fleet grows, and how fast a burst drains.

N native workers (production timings, MAX_CONCURRENT_JOBS=1, subscribed to their own
``jobs:assignments``, the light fake claude: tests/support/fakes/light_claude) on one dev
backend, which counts every function call and what Convex
would have met running them concurrently (``/_dev/stats``: devbackend/occ.ts).

- idle, N = 1, 10 and 50: jobs enqueued one at a time into an idle fleet (each done before
  the next). Per job: claim calls, client calls (enqueue to completion; heartbeats and
  document batches aside), the dispatcher's own ticks, conflicts (all, and on the claim
  path), subscription re-runs and pushes; pickup (the job's startedAt - createdAt, both on
  the backend's clock) p50 and p95.
- burst, N = 50: 1,000 short jobs enqueued by 10 concurrent clients while the fleet claims
  and completes. Time to drain against the ideal (jobs x the jobs' own mean duration / N),
  conflicts, and the documents two concurrent mutations both wrote (hot documents), and the
  CPU seconds of the workers and of the backend.

Run: .venv/bin/python -m bench.scale [--fleets 1,10,50] [--idle-jobs 20] [--burst 1000]
     [--no-burst] [--json]
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import itertools
import os
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from bench.common import Row, Stack, emit, log, met_at_most, percentile, small_repo, stack
from tests.support import wait_until
from tests.support.paths import LIGHT_CLAUDE

# Production timings; quiet logs (50 workers at debug cost the machine more than the jobs).
WORKER_ENV = {"LOG_LEVEL": "info", "LEASE_MS": "90000"}
# A short job: five fake Claude steps of this many seconds (plus clone, collect, upload).
STEP_S = "4"
TARGET_CLAIMS_PER_JOB = 1.2
TARGET_CALLS_PER_JOB = 4.0
TARGET_PICKUP_P95_S = 1.0
TARGET_DRAIN_RATIO = 1.2
# Client calls the figure leaves aside (issue: heartbeats and document batches).
ASIDE = {"jobs:heartbeat", "docs:uploadDocs"}
INTERNAL_PREFIXES = ("dispatch:", "docs:purgeStale", "metrics:pruneStats", "jobs:reclaimExpired")


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process and its reaped children, plus its live descendants'."""
    from tests.support.worker_process import descendants

    ticks = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for i, p in enumerate([pid, *descendants(pid)]):
        with contextlib.suppress(OSError, IndexError, ValueError):
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
            # utime, stime (13, 14 of the fields after the name); cutime, cstime for the root
            own = int(fields[11]) + int(fields[12])
            reaped = int(fields[13]) + int(fields[14]) if i == 0 else 0
            total += (own + reaped) / ticks
    return total


def dump(s: Stack, table: str) -> list[dict[str, Any]]:
    return s.backend.dump(table)


def stats(s: Stack) -> dict[str, Any]:
    return s.backend.stats()


def reset_stats(s: Stack) -> None:
    httpx.post(f"{s.backend.url}/_dev/stats/reset", timeout=10).raise_for_status()


def start_fleet(s: Stack, n: int, **env: str) -> list[Any]:
    workers = [
        s.start_worker(f"w{i}", wait_healthy=False, claude_bin=LIGHT_CLAUDE, **WORKER_ENV, **env)
        for i in range(n)
    ]
    deadline = time.monotonic() + 120 + n * 3
    for worker in workers:
        wait_until(worker.healthy, max(1.0, deadline - time.monotonic()))
    # every slot offered: the fleet is idle and known to the dispatcher
    wait_until(lambda: len(dump(s, "workerSlots")) >= n, max(1.0, deadline - time.monotonic()))
    wait_until(
        lambda: all(w.metric("fondation_worker_wakeup_subscribed") == 1 for w in workers),
        max(1.0, deadline - time.monotonic()),
    )
    return workers


def call_counts(st: dict[str, Any]) -> tuple[float, float, dict[str, int]]:
    """(client calls, internal calls, per function) from /_dev/stats. Client calls count
    the enqueue: it is the job's first call."""
    per = {name: f["calls"] for name, f in st["functions"].items()}
    internal = sum(c for name, c in per.items() if name.startswith(INTERNAL_PREFIXES))
    client = sum(
        c for name, c in per.items() if not name.startswith(INTERNAL_PREFIXES) and name not in ASIDE
    )
    return client, internal, per


@dataclass
class IdleResult:
    n: int
    jobs: int
    claims_per_job: float
    client_calls_per_job: float
    internal_calls_per_job: float
    conflicts_per_job: float
    claim_conflicts: int
    subscription_runs_per_job: float
    pushes_per_job: float
    pickup_p50_s: float | None
    pickup_p95_s: float | None
    worker_cpu_s_per_job: float
    backend_cpu_s_per_job: float


def idle(n: int, jobs: int) -> IdleResult:
    rng = random.Random(n)
    with stack(f"scale-idle-{n}", admin=True) as s:
        repo = s.add_repo("small", small_repo())
        log(f"idle: starting {n} workers")
        workers = start_fleet(s, n, FAKE_CLAUDE_DELAY="0")
        time.sleep(1.0)
        reset_stats(s)
        cpu0 = sum(cpu_seconds(w.process.pid) for w in workers)
        b0 = cpu_seconds(s.backend.process.pid)
        with s.backend.operator_client() as operator:
            for i in range(jobs):
                time.sleep(rng.uniform(0.3, 1.0))
                job_id = operator.enqueue(repo, dedupe_key=f"idle-{i}").job_id
                wait_until(
                    lambda job_id=job_id: (
                        next((j for j in dump(s, "jobs") if j["_id"] == job_id), {"status": ""})[
                            "status"
                        ]
                        in ("completed", "dead")
                    ),
                    120,
                    0.1,
                )
        time.sleep(1.5)  # the last job's trailing commits (its slot offered, the tick)
        st = stats(s)
        cpu = sum(cpu_seconds(w.process.pid) for w in workers) - cpu0
        backend_cpu = cpu_seconds(s.backend.process.pid) - b0
        done = [j for j in dump(s, "jobs") if j["status"] == "completed"]
        pickups = [(j["startedAt"] - j["createdAt"]) / 1000 for j in done]
    client, internal, per = call_counts(st)
    return IdleResult(
        n=n,
        jobs=jobs,
        claims_per_job=per.get("jobs:claimOne", 0) / jobs,
        client_calls_per_job=client / jobs,
        internal_calls_per_job=internal / jobs,
        conflicts_per_job=st["conflicts"] / jobs,
        claim_conflicts=st["functions"].get("jobs:claimOne", {}).get("conflicts", 0),
        subscription_runs_per_job=st["subscriptions"]["runs"] / jobs,
        pushes_per_job=st["subscriptions"]["pushes"] / jobs,
        pickup_p50_s=percentile(pickups, 50),
        pickup_p95_s=percentile(pickups, 95),
        worker_cpu_s_per_job=cpu / jobs,
        backend_cpu_s_per_job=backend_cpu / jobs,
    )


@dataclass
class BurstResult:
    n: int
    jobs: int
    drain_s: float
    mean_job_s: float
    ideal_s: float
    ratio: float
    claims_per_job: float
    client_calls_per_job: float
    internal_calls_per_job: float
    conflicts: int
    claim_conflicts: int
    conflicts_by_function: dict[str, int]
    conflicts_by_pair: dict[str, int]
    hot_documents: dict[str, int]
    hot_documents_by: dict[str, int]
    turnaround_p50_s: float | None
    turnaround_p95_s: float | None
    queue_wait_ms: dict[str, float | None]
    worker_cpu_s: float
    backend_cpu_s: float


def burst(n: int, jobs: int, clients: int = 10) -> BurstResult:
    with stack(f"scale-burst-{n}", admin=True) as s:
        repo = s.add_repo("small", small_repo())
        log(f"burst: starting {n} workers")
        workers = start_fleet(s, n, FAKE_CLAUDE_DELAY=STEP_S)
        time.sleep(1.0)
        reset_stats(s)
        cpu0 = sum(cpu_seconds(w.process.pid) for w in workers)
        b0 = cpu_seconds(s.backend.process.pid)
        log(f"burst: {jobs} jobs from {clients} clients")
        started = time.monotonic()

        def enqueue_share(k: int) -> None:
            with s.backend.operator_client() as operator:
                for i in range(k, jobs, clients):
                    operator.enqueue(repo, dedupe_key=f"burst-{i}", user_id=f"client-{k}")

        with concurrent.futures.ThreadPoolExecutor(clients) as pool:
            list(pool.map(enqueue_share, range(clients)))
        enqueued_s = time.monotonic() - started
        log(f"burst: enqueued in {enqueued_s:.1f} s; draining")

        def finished() -> bool:
            rows = dump(s, "jobs")
            return len(rows) == jobs and all(r["status"] in ("completed", "dead") for r in rows)

        wait_until(finished, 3600, 1.0)
        drain_s = time.monotonic() - started
        time.sleep(1.5)
        st = stats(s)
        worker_cpu = sum(cpu_seconds(w.process.pid) for w in workers) - cpu0
        backend_cpu = cpu_seconds(s.backend.process.pid) - b0
        rows = dump(s, "jobs")
    done = [r for r in rows if r["status"] == "completed"]
    durations = [(r["completedAt"] - r["startedAt"]) / 1000 for r in done]
    # A worker's turnaround: from its job's completion to its next job's start (the final
    # call's offer, a tick, the push, the claim), while jobs were waiting.
    by_worker: dict[str, list[dict[str, Any]]] = {}
    for r in done:
        by_worker.setdefault(r["lockedBy"], []).append(r)
    turnarounds = []
    for runs in by_worker.values():
        runs.sort(key=lambda r: r["startedAt"])
        for before, after in itertools.pairwise(runs):
            turnarounds.append((after["startedAt"] - before["completedAt"]) / 1000)
    mean_job_s = sum(durations) / len(durations)
    ideal_s = jobs * mean_job_s / n
    client, internal, per = call_counts(st)
    return BurstResult(
        n=n,
        jobs=jobs,
        drain_s=drain_s,
        mean_job_s=mean_job_s,
        ideal_s=ideal_s,
        ratio=drain_s / ideal_s,
        claims_per_job=per.get("jobs:claimOne", 0) / jobs,
        client_calls_per_job=client / jobs,
        internal_calls_per_job=internal / jobs,
        conflicts=st["conflicts"],
        claim_conflicts=st["functions"].get("jobs:claimOne", {}).get("conflicts", 0),
        conflicts_by_function={
            name: f["conflicts"] for name, f in st["functions"].items() if f["conflicts"]
        },
        conflicts_by_pair=st["conflictsBy"],
        hot_documents=st["hotDocuments"],
        hot_documents_by=st["hotDocumentsBy"],
        turnaround_p50_s=percentile(turnarounds, 50),
        turnaround_p95_s=percentile(turnarounds, 95),
        queue_wait_ms=st["queueWaitMs"],
        worker_cpu_s=worker_cpu,
        backend_cpu_s=backend_cpu,
    )


def rows_of(idles: list[IdleResult], b: BurstResult | None) -> list[Row]:
    out: list[Row] = []
    for r in idles:
        tag = f"N={r.n}"
        out += [
            Row(
                f"{tag} claim calls per job",
                r.claims_per_job,
                "",
                f"<= {TARGET_CLAIMS_PER_JOB}",
                met_at_most(r.claims_per_job, TARGET_CLAIMS_PER_JOB),
            ),
            Row(
                f"{tag} Convex calls per job (client)",
                r.client_calls_per_job,
                "",
                f"<= {TARGET_CALLS_PER_JOB}",
                met_at_most(r.client_calls_per_job, TARGET_CALLS_PER_JOB),
                note=f"+ {r.internal_calls_per_job:.2f} dispatcher calls per job",
            ),
            Row(
                f"{tag} conflicts per job",
                r.conflicts_per_job,
                "",
                "claim path 0",
                r.claim_conflicts == 0,
                note=f"claim path: {r.claim_conflicts}",
            ),
            Row(
                f"{tag} subscription re-runs per job",
                r.subscription_runs_per_job,
                "",
                note=f"pushes per job {r.pushes_per_job:.2f}",
            ),
            Row(f"{tag} pickup p50", r.pickup_p50_s, "s"),
            Row(
                f"{tag} pickup p95",
                r.pickup_p95_s,
                "s",
                f"<= {TARGET_PICKUP_P95_S}",
                met_at_most(r.pickup_p95_s, TARGET_PICKUP_P95_S),
            ),
            Row(
                f"{tag} CPU per job",
                r.worker_cpu_s_per_job,
                "s",
                note=f"workers (with their git and fake claude); backend "
                f"{r.backend_cpu_s_per_job:.3f} s",
            ),
        ]
    if b is not None:
        tag = f"burst {b.jobs} jobs, N={b.n}"
        out += [
            Row(
                f"{tag}: drain / ideal",
                b.ratio,
                "x",
                f"<= {TARGET_DRAIN_RATIO}",
                met_at_most(b.ratio, TARGET_DRAIN_RATIO),
                note=f"drained in {b.drain_s:.0f} s; ideal {b.ideal_s:.0f} s "
                f"({b.jobs} x {b.mean_job_s:.1f} s mean job / {b.n})",
            ),
            Row(
                f"{tag}: turnaround p50",
                b.turnaround_p50_s,
                "s",
                note=f"a worker's job end to its next job's start; p95 "
                f"{b.turnaround_p95_s} s; the dev backend's queue wait (ms) {b.queue_wait_ms}",
            ),
            Row(
                f"{tag}: claim calls per job",
                b.claims_per_job,
                "",
                f"<= {TARGET_CLAIMS_PER_JOB}",
                met_at_most(b.claims_per_job, TARGET_CLAIMS_PER_JOB),
                note=f"client calls per job {b.client_calls_per_job:.2f}, "
                f"dispatcher calls per job {b.internal_calls_per_job:.2f}",
            ),
            Row(
                f"{tag}: conflicts",
                float(b.conflicts),
                "",
                "claim path 0",
                b.claim_conflicts == 0,
                note=f"by function {b.conflicts_by_function}; by pair {b.conflicts_by_pair}",
            ),
            Row(
                f"{tag}: hot documents",
                float(sum(b.hot_documents.values())),
                "",
                "0",
                not b.hot_documents,
                note=f"documents two concurrent mutations both wrote, by table: {b.hot_documents}",
            ),
            Row(
                f"{tag}: CPU",
                b.worker_cpu_s,
                "s",
                note=f"workers {b.worker_cpu_s / b.jobs:.3f} s per job; backend "
                f"{b.backend_cpu_s:.0f} s ({b.backend_cpu_s / b.jobs:.3f} s per job)",
            ),
        ]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--fleets", default="1,10,50")
    parser.add_argument("--idle-jobs", type=int, default=20)
    parser.add_argument("--burst", type=int, default=1000)
    parser.add_argument("--burst-workers", type=int, default=50)
    parser.add_argument("--no-burst", action="store_true")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    idles = []
    for n in (int(x) for x in args.fleets.split(",") if x):
        result = idle(n, args.idle_jobs)
        log(f"idle N={n}: {result}")
        idles.append(result)
    b = None if args.no_burst else burst(args.burst_workers, args.burst)
    if b is not None:
        log(f"burst: {b}")
    emit("Fleet scale (bench/scale.py)", rows_of(idles, b))


if __name__ == "__main__":
    main()
