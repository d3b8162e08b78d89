"""The invariants checked at the end of a run. Pure functions over what was recorded, so each
is unit-tested on synthetic data (tests/unit/test_chaos_invariants.py)."""

from __future__ import annotations

import contextlib
import json
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from fondation_worker.contract import LEASED_STATUSES, TERMINAL_STATUSES

from .models import (
    CheckResult,
    EnqueuedJob,
    Execution,
    FaultEvent,
    Observation,
    SecretHit,
)

# Worker log events written after a job's claude process is gone (reaped or killed).
PROCESS_GONE_EVENTS = frozenset(
    {
        "step.finished",
        "job.fenced",
        "job.released",
        "job.canceled",
        "job.failed",
        "job.completed",
        "job.lease_lost",
        "job.abandoned",
        "job.crashed",
        "job.retry_refused",
        "job.final_call_refused",
        "job.final_call_failed",
    }
)


@dataclass(frozen=True)
class LogEvent:
    worker: str
    t: float
    event: str
    job_id: str | None
    attempt: int | None


def read_worker_log(worker: str, path: Path) -> list[LogEvent]:
    events: list[LogEvent] = []
    if not path.exists():
        return events
    for line in path.read_text(errors="replace").splitlines():
        try:
            data: dict[str, Any] = json.loads(line)
            t = datetime.fromisoformat(str(data["ts"]).replace("Z", "+00:00")).timestamp()
        except (ValueError, KeyError):
            continue
        attempt = data.get("attempt")
        events.append(
            LogEvent(
                worker=worker,
                t=t,
                event=str(data.get("event", "")),
                job_id=data.get("job_id"),
                attempt=int(attempt) if isinstance(attempt, int | float) else None,
            )
        )
    return events


def close_open_executions(executions: list[Execution], logs: Iterable[LogEvent]) -> list[Execution]:
    """An execution without an end record whose worker logged the job's process gone (a
    fence kills with SIGKILL: no record) ended at that log line, if earlier than assumed."""
    gone: dict[tuple[str, str], list[float]] = defaultdict(list)
    for event in logs:
        if event.job_id and event.event in PROCESS_GONE_EVENTS:
            gone[(event.worker, event.job_id)].append(event.t)
    closed: list[Execution] = []
    for execution in executions:
        if not execution.end_known:
            after = [
                t for t in gone.get((execution.worker, execution.job), []) if t >= execution.start
            ]
            if after and min(after) < execution.end:
                execution = execution.model_copy(update={"end": min(after), "outcome": "killed"})
        closed.append(execution)
    return closed


def overlaps(executions: list[Execution]) -> list[tuple[Execution, Execution]]:
    """Pairs of executions of the same job that ran at the same time (different processes)."""
    by_job: dict[str, list[Execution]] = defaultdict(list)
    for execution in executions:
        by_job[execution.job].append(execution)
    found: list[tuple[Execution, Execution]] = []
    for runs in by_job.values():
        runs.sort(key=lambda e: e.start)
        for i, first in enumerate(runs):
            for second in runs[i + 1 :]:
                if second.start >= first.end:
                    break
                found.append((first, second))
    return found


def check_final_states(jobs: list[EnqueuedJob], latest: dict[str, Observation]) -> CheckResult:
    wrong: list[str] = []
    stuck = 0
    for job in jobs:
        seen = latest.get(job.job_id)
        status = seen.status if seen else "missing"
        if status not in TERMINAL_STATUSES:
            stuck += 1
        if status != job.expected:
            wrong.append(f"{job.job_id} ({job.plan.kind}): {status}, expected {job.expected}")
    detail = f"{len(jobs) - len(wrong)}/{len(jobs)} as predicted, {stuck} not terminal"
    if wrong:
        detail += "; " + "; ".join(wrong[:8])
    return CheckResult(name="final states", ok=not wrong, detail=detail)


def check_no_extra_jobs(jobs: list[EnqueuedJob], latest: dict[str, Observation]) -> CheckResult:
    known = {j.job_id for j in jobs}
    extra = sorted(set(latest) - known)
    return CheckResult(
        name="no unexpected jobs",
        ok=not extra,
        detail=f"{len(latest)} jobs in Convex, {len(known)} enqueued"
        + (f"; extra: {extra[:5]}" if extra else ""),
    )


def check_dedupe(
    jobs: list[EnqueuedJob], history: dict[str, list[Observation]], slack_s: float
) -> CheckResult:
    """A repeated enqueue with an active job's key returns that job; a new job only once the
    first had ended."""
    bad: list[str] = []
    replies = 0
    for job in jobs:
        for reply in job.duplicate_replies:
            replies += 1
            if reply.job_id == job.job_id and not reply.created:
                continue
            ended = [o.t for o in history.get(job.job_id, []) if o.status in TERMINAL_STATUSES]
            if reply.created and ended and min(ended) <= reply.t + slack_s:
                continue
            bad.append(f"{job.job_id}: reply {reply.job_id} created={reply.created}")
    return CheckResult(
        name="dedupe",
        ok=not bad,
        detail=f"{replies} repeated enqueues, {len(bad)} created a second active job"
        + (f": {bad[:5]}" if bad else ""),
    )


def completions(logs: Iterable[LogEvent]) -> Counter[str]:
    """How many distinct claims (worker, attempt) reported each job completed."""
    seen: set[tuple[str, str, int | None]] = set()
    for event in logs:
        if event.event == "job.completed" and event.job_id:
            seen.add((event.job_id, event.worker, event.attempt))
    return Counter(job for job, _, _ in seen)


def check_single_completion(
    jobs: list[EnqueuedJob],
    latest: dict[str, Observation],
    completed_by: Counter[str],
    job_rows: list[dict[str, Any]],
    doc_rows: list[dict[str, Any]],
) -> tuple[CheckResult, set[str]]:
    runs: dict[str, set[str]] = defaultdict(set)
    counts: Counter[str] = Counter()
    for doc in doc_rows:
        runs[str(doc["jobId"])].add(str(doc["runId"]))
        counts[str(doc["jobId"])] += 1
    rows = {str(r["_id"]): r for r in job_rows}
    bad: dict[str, str] = {}
    for job in jobs:
        status = latest[job.job_id].status if job.job_id in latest else "missing"
        n = completed_by.get(job.job_id, 0)
        if n > 1:
            bad[job.job_id] = f"completed by {n} claims"
        generations = runs.get(job.job_id, set())
        if status == "completed":
            row = rows.get(job.job_id, {})
            expected_docs = int((row.get("result") or {}).get("docsCount", -1))
            if generations != {row.get("docsRunId")}:
                bad[job.job_id] = f"{len(generations)} generations of docs"
            elif counts[job.job_id] != expected_docs:
                bad[job.job_id] = f"{counts[job.job_id]} docs, summary says {expected_docs}"
            elif n != 1:
                bad[job.job_id] = f"completed in Convex, {n} worker completions logged"
        elif generations:
            bad[job.job_id] = f"{status} but {len(generations)} generations of docs kept"
    detail = f"{sum(1 for j in jobs if completed_by.get(j.job_id) == 1)} completed once, "
    detail += f"{len(bad)} problems" + (f": {list(bad.items())[:5]}" if bad else "")
    return CheckResult(name="completed once, one docs generation", ok=not bad, detail=detail), set(
        bad
    )


def check_no_overlap(executions: list[Execution]) -> tuple[CheckResult, set[str]]:
    pairs = overlaps(executions)
    jobs = {a.job for a, _ in pairs}
    open_ends = [e for e in executions if e.outcome == "no end"]
    detail = f"{len(executions)} claude runs, {len(pairs)} overlapping pairs"
    if pairs:
        a, b = pairs[0]
        detail += (
            f"; e.g. job {a.job}: {a.worker} {a.step} {a.start:.2f}-{a.end:.2f} and "
            f"{b.worker} {b.step} {b.start:.2f}-{b.end:.2f}"
        )
    if open_ends:
        detail += f"; {len(open_ends)} runs without an end (counted as running to the end)"
    return CheckResult(name="no overlapping executions", ok=not pairs, detail=detail), jobs


def _recovered_at(history: list[Observation], start: float, end: float) -> Observation | None:
    """The first observation after ``start`` of the job back in the queue (pending, failed,
    re-claimed under a new lease generation), ended, or its lease renewed after ``end``."""
    before = [o for o in history if o.t <= start]
    base = before[-1] if before else None
    for seen in history:
        if seen.t <= start:
            continue
        if base is None or base.status not in LEASED_STATUSES:
            return seen
        if seen.status not in LEASED_STATUSES or seen.generation != base.generation:
            return seen
        if seen.t > end and (seen.lease_until or 0) > (base.lease_until or 0):
            return seen
    return None


def recovery_time(history: list[Observation], start: float, end: float) -> float | None:
    """Seconds from ``start`` until the job was seen recovered (see ``_recovered_at``): an
    upper bound, since the poller sees a change only at its next reply."""
    seen = _recovered_at(history, start, end)
    return None if seen is None else seen.t - start


def stuck_until(history: list[Observation], start: float, end: float) -> float | None:
    """Seconds from ``start`` for which the job is known to have stayed stuck: until the
    previous poll was sent (that poll still saw it stuck). A lower bound of the recovery
    time that a slow poller cannot inflate; None if it never recovered."""
    seen = _recovered_at(history, start, end)
    if seen is None:
        return None
    return max(0.0, (seen.since if seen.since is not None else seen.t) - start)


def check_recovery(
    events: list[FaultEvent], history: dict[str, list[Observation]]
) -> tuple[CheckResult, dict[int, dict[str, float | None]]]:
    times: dict[int, dict[str, float | None]] = {}
    late: list[str] = []
    for index, event in enumerate(events):
        times[index] = {}
        for job_id in event.affected:
            renew_from = event.start if event.holder_alive else event.end
            jobs = history.get(job_id, [])
            took = recovery_time(jobs, event.start, renew_from)
            times[index][job_id] = took
            # Late only when a poll sent after the bound still found the job stuck.
            stuck = stuck_until(jobs, event.start, renew_from)
            if stuck is None or stuck > event.bound_s:
                shown = "never" if stuck is None else f"still stuck at {stuck:.1f} s"
                late.append(f"{event.kind} {job_id}: {shown} > {event.bound_s:.1f} s")
    affected = sum(len(e.affected) for e in events)
    return (
        CheckResult(
            name="faulted jobs back within lease + reclaim",
            ok=not late,
            detail=f"{affected} faulted jobs, {len(late)} late" + (f": {late[:5]}" if late else ""),
        ),
        times,
    )


def check_secrets(hits: list[SecretHit], places: list[str]) -> CheckResult:
    where = Counter(h.where.split(":")[0] for h in hits)
    return CheckResult(
        name="no token anywhere",
        ok=not hits,
        detail=f"{len(hits)} token occurrences in {', '.join(places)}"
        + (f"; found in {dict(where)} ({sorted({h.secret for h in hits})})" if hits else ""),
    )


def check_temp_dirs(leftovers: dict[str, list[str]]) -> CheckResult:
    dirty = {w: paths for w, paths in leftovers.items() if paths}
    return CheckResult(
        name="every TEMP_DIR empty",
        ok=not dirty,
        detail=f"{len(leftovers)} TEMP_DIRs, {len(dirty)} not empty"
        + (f": {dict(list(dirty.items())[:3])}" if dirty else ""),
    )


def check_landlock(worker_logs: dict[str, Path]) -> CheckResult:
    """Every start of every worker ran its claude steps under Landlock (the default)."""
    starts: list[str] = []
    for worker, path in sorted(worker_logs.items()):
        if not path.exists():
            continue
        for line in path.read_text(errors="replace").splitlines():
            with contextlib.suppress(ValueError):
                data = json.loads(line)
                if data.get("event") == "worker.layers":
                    starts.append(f"{worker}: {data.get('landlock')}")
    off = [s for s in starts if ": on (ABI " not in s]
    return CheckResult(
        name="claude under Landlock",
        ok=bool(starts) and not off,
        detail=f"{len(starts)} worker starts, {len(off)} without Landlock"
        + (f": {off[:3]}" if off else ""),
    )
