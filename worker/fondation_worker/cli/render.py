"""What the operator commands print: job progress, the queue table, stuck jobs, one job.

Pure functions of Convex's replies (no I/O), so every layout is tested without a backend.
"""

from __future__ import annotations

import time
from typing import Any

from ..contract import JOB_STATUSES, QUEUED_STATUSES
from ..models import PublicJob, StuckJob
from ..units import seconds as to_seconds


def progress_line(job: PublicJob) -> str:
    parts = [f"[{job.status}]"]
    progress = job.progress
    if progress is not None:
        if progress.current_step is not None and progress.total_steps:
            parts.append(f"step {progress.current_step} of {progress.total_steps}")
        if progress.message:
            parts.append(progress.message)
    if job.attempts is not None and job.max_attempts:
        parts.append(f"(attempt {job.attempts}/{job.max_attempts})")
    if job.status in QUEUED_STATUSES and job.last_error:
        parts.append(f"last error: {job.last_error[:120]}")
    return " ".join(parts)


def dropped_note(job: PublicJob) -> str:
    dropped = job.result.dropped if job.result else None
    if dropped is None or dropped.count == 0:
        return ""
    reasons = ", ".join(f"{r.reason} {r.count}" for r in dropped.reasons)
    return f" ({dropped.count} generated file(s) left out: {reasons})"


# (label, key in metrics:queue) of the queue's other figures; ages are in ms.
_STATUS_QUEUE = (
    ("ready", "ready"),
    ("scheduled", "scheduled"),
    ("in progress", "inProgress"),
    ("idle worker slots", "idleSlots"),
)
_STATUS_AGES = (
    ("oldest ready job waiting", "oldestReadyAgeMs"),
    ("oldest expired lease", "oldestExpiredLeaseAgeMs"),
)
# (label, key in a window, how to show it)
_STATUS_WINDOW = (
    ("completed", "completed", "count"),
    ("failed (will retry)", "failed", "count"),
    ("dead", "dead", "count"),
    ("canceled", "canceled", "count"),
    ("success rate", "successRate", "rate"),
    ("average duration", "avgDurationMs", "duration"),
    ("p95 duration", "p95DurationMs", "duration"),
    ("jobs that left docs out", "jobsWithDroppedDocs", "count"),
    ("docs left out", "droppedDocs", "count"),
)


def _figure(value: Any, kind: str) -> str:
    """One cell: a count, a share or a duration; "-" when Convex has none (null)."""
    if not isinstance(value, int | float) or isinstance(value, bool):
        return "-"
    if kind == "rate":
        return f"{value:.1%}"
    if kind == "duration":
        return duration(value)
    return str(int(value)) if float(value).is_integer() else f"{value:.3f}"


def _aligned(rows: list[list[str]]) -> list[str]:
    """Label column left-aligned, figure columns right-aligned."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = []
    for row in rows:
        figures = (cell.rjust(width) for cell, width in zip(row[1:], widths[1:], strict=True))
        lines.append("  ".join([row[0].ljust(widths[0]), *figures]).rstrip())
    return lines


def render_status(metrics: dict[str, Any]) -> list[str]:
    """metrics:queue as an operator reads it: the queue now, then the last hour and day side
    by side. Keys Convex does not send show as "-"; new ones are left to --json."""
    counts = metrics.get("counts") or {}
    queue = [["QUEUE", "NOW"]]
    queue += [[name, _figure(counts.get(name), "count")] for name in JOB_STATUSES]
    queue += [[label, _figure(metrics.get(key), "count")] for label, key in _STATUS_QUEUE]
    queue += [[label, _figure(metrics.get(key), "duration")] for label, key in _STATUS_AGES]
    hour = metrics.get("lastHour") or {}
    day = metrics.get("lastDay") or {}
    windows = [["OUTCOMES", "LAST HOUR", "LAST DAY"]]
    windows += [
        [label, _figure(hour.get(key), kind), _figure(day.get(key), kind)]
        for label, key, kind in _STATUS_WINDOW
    ]
    # One width for both tables' label column, so the figures line up down the page.
    label_width = max(len(row[0]) for row in queue + windows)
    for row in queue + windows:
        row[0] = row[0].ljust(label_width)
    return [*_aligned(queue), "", *_aligned(windows)]


def duration(ms: float) -> str:
    """12s, 4m 05s, 2h 03m, 3d 04h."""
    seconds = max(0, int(to_seconds(ms)))
    if seconds < 60:
        return f"{seconds}s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes}m {seconds:02d}s"
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return f"{hours}h {minutes:02d}m"
    days, hours = divmod(hours, 24)
    return f"{days}d {hours:02d}h"


def stuck_since(job: StuckJob, now_ms: float) -> str:
    if job.why == "lease_expired" and job.lease_expires_at is not None:
        return f"lease expired {duration(now_ms - job.lease_expires_at)} ago"
    if job.started_at is not None:
        return f"running for {duration(now_ms - job.started_at)}"
    return "-"


def table(rows: list[list[str]]) -> list[str]:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return [
        "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in rows
    ]


def describe(job: PublicJob) -> list[str]:
    repo = (job.repo_url or "?") + (f" ({job.branch})" if job.branch else "")
    lines = [
        f"job       {job.job_id}",
        f"status    {job.status}",
        f"repo      {repo}",
        f"attempts  {job.attempts}/{job.max_attempts} (deferrals {job.deferrals})",
    ]
    if job.user_id:
        lines.append(
            f"user      {job.user_id}" + (f" (key {job.dedupe_key})" if job.dedupe_key else "")
        )
    if job.last_error:
        lines.append(f"error     {job.last_error_kind or '?'}: {job.last_error[:300]}")
    if job.completed_at is not None:
        ended = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(to_seconds(job.completed_at)))
        lines.append(f"ended     {ended}")
    if job.requeues:
        lines.append(f"requeued  {len(job.requeues)} time(s) before")
    dropped = dropped_note(job)
    if dropped:
        lines.append(f"dropped  {dropped}")
    return lines


def stuck_table(jobs: list[StuckJob], now_ms: float) -> list[str]:
    """The stuck jobs as an aligned table, header first."""
    rows = [["JOB", "STATUS", "WHY", "ATTEMPT", "WORKER", "SINCE", "REPOSITORY"]]
    for job in jobs:
        repo = job.repo_url + (f" ({job.branch})" if job.branch else "")
        rows.append(
            [
                job.job_id,
                job.status + (" (cancel requested)" if job.cancel_requested else ""),
                job.why,
                f"{job.attempts}/{job.max_attempts}",
                job.worker_id or "-",
                stuck_since(job, now_ms),
                repo,
            ]
        )
    return table(rows)
