"""The run's report: one row per fault kind and the totals, the invariants, the job mix.
Written as report.json and report.md in the run directory."""

from __future__ import annotations

import json
from collections import Counter
from datetime import datetime
from pathlib import Path
from typing import Any

from .models import (
    FAULT_KINDS,
    CheckResult,
    EnqueuedJob,
    FaultEvent,
    FaultRow,
    Observation,
    RunConfig,
)


def fault_rows(
    events: list[FaultEvent],
    recovery: dict[int, dict[str, float | None]],
    jobs: list[EnqueuedJob],
    latest: dict[str, Observation],
    duplicated_jobs: set[str],
) -> list[FaultRow]:
    expected = {j.job_id: j.expected for j in jobs}
    rows: list[FaultRow] = []
    for kind in FAULT_KINDS:
        indexes = [i for i, e in enumerate(events) if e.kind == kind]
        affected: set[str] = set()
        worst: float | None = None
        bound: float | None = None
        for i in indexes:
            affected.update(events[i].affected)
            bound = max(bound or 0.0, events[i].bound_s)
            for took in recovery.get(i, {}).values():
                if took is not None:
                    worst = max(worst or 0.0, took)
        lost = {j for j in affected if j not in latest or latest[j].status != expected.get(j, "?")}
        rows.append(
            FaultRow(
                fault=kind,
                injected=len(indexes),
                affected=len(affected),
                recovered=len(affected - lost),
                lost=len(lost),
                duplicated=len(affected & duplicated_jobs),
                worst_recovery_s=None if worst is None else round(worst, 2),
                bound_s=None if bound is None else round(bound, 1),
            )
        )
    return rows


def totals(
    rows: list[FaultRow],
    jobs: list[EnqueuedJob],
    latest: dict[str, Observation],
    duplicated_jobs: set[str],
) -> dict[str, Any]:
    lost = [
        j.job_id
        for j in jobs
        if latest.get(j.job_id) is None or latest[j.job_id].status != j.expected
    ]
    worst = [r.worst_recovery_s for r in rows if r.worst_recovery_s is not None]
    return {
        "injected": sum(r.injected for r in rows),
        "affected": sum(r.affected for r in rows),
        "recovered": sum(r.recovered for r in rows),
        "jobs": len(jobs),
        "lost": len(lost),
        "duplicated": len(duplicated_jobs),
        "worst_recovery_s": max(worst) if worst else None,
    }


def job_mix(jobs: list[EnqueuedJob], latest: dict[str, Observation]) -> list[dict[str, Any]]:
    table: dict[str, Counter[str]] = {}
    for job in jobs:
        status = latest[job.job_id].status if job.job_id in latest else "missing"
        counter = table.setdefault(job.plan.kind, Counter())
        counter["jobs"] += 1
        counter[status] += 1
        counter["as predicted"] += int(status == job.expected)
        counter["attempts"] = max(
            counter["attempts"], latest[job.job_id].attempts if job.job_id in latest else 0
        )
    return [{"kind": kind, **dict(counts)} for kind, counts in sorted(table.items())]


def subscription_downtime(log_paths: dict[str, Path], end: float) -> dict[str, dict[str, Any]]:
    """How long each worker ran without its jobs:assignments subscription, from its own log.

    ``wakeup.subscribed`` carries the gap it ends (``down_s``, start-up included); a
    ``wakeup.down`` with no later ``wakeup.subscribed`` counts until ``end``. Outages are
    the ``wakeup.down`` events (a socket cut by a fault), not restarts.
    """
    out: dict[str, dict[str, Any]] = {}
    for name, path in sorted(log_paths.items()):
        down_s = 0.0
        outages = 0
        open_since: float | None = None
        try:
            lines = path.read_text(errors="replace").splitlines()
        except OSError:
            continue
        for line in lines:
            try:
                entry = json.loads(line)
            except ValueError:
                continue
            if not isinstance(entry, dict):
                continue
            event = entry.get("event")
            if event == "wakeup.down":
                outages += 1
                stamp = str(entry.get("ts", "")).replace("Z", "+00:00")
                try:
                    open_since = datetime.fromisoformat(stamp).timestamp()
                except ValueError:
                    open_since = None
            elif event == "wakeup.subscribed":
                down_s += float(entry.get("down_s", 0.0))
                open_since = None
        if open_since is not None:
            down_s += max(0.0, end - open_since)
        out[name] = {"outages": outages, "without_subscription_s": round(down_s, 1)}
    return out


def _cell(value: Any) -> str:
    return "-" if value is None else str(value)


def render_markdown(data: dict[str, Any]) -> str:
    c = data["config"]
    t = data["totals"]
    lines = [
        f"# Chaos run {data['run_id']}",
        "",
        f"{c['jobs']} jobs, {c['workers']} workers, load window {c['duration_s']:.0f} s, "
        f"seed {c['seed']}; lease {c['lease_ms'] / 1000:g} s, heartbeat "
        f"{c['heartbeat_ms'] / 1000:g} s, reclaim every {c['reclaim_ms'] / 1000:g} s. "
        f"Wall time {data['wall_s']:.0f} s. Result: **{'PASS' if data['ok'] else 'FAIL'}**.",
        "",
        "| fault | injected | jobs affected | recovered | lost | duplicated "
        "| worst recovery (s) | bound (s) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in data["faults"]:
        lines.append(
            f"| {row['fault']} | {row['injected']} | {row['affected']} | {row['recovered']} "
            f"| {row['lost']} | {row['duplicated']} | {_cell(row['worst_recovery_s'])} "
            f"| {_cell(row['bound_s'])} |"
        )
    lines.append(
        f"| **total** | {t['injected']} | {t['affected']} | {t['recovered']} | {t['lost']} "
        f"| {t['duplicated']} | {_cell(t['worst_recovery_s'])} | |"
    )
    lines += [
        "",
        f"All {t['jobs']} jobs: {t['lost']} lost (not in the state their kind predicts), "
        f"{t['duplicated']} duplicated (completed twice, two docs generations or overlapping "
        "executions).",
        "",
        "A worst recovery is when the state poller saw the job back (an upper bound); a job "
        "is late only if a poll sent after its bound still found it stuck.",
        "",
        "## Invariants",
        "",
        "| check | result | detail |",
        "|---|---|---|",
    ]
    for check in data["checks"]:
        detail = str(check["detail"]).replace("|", "/")
        lines.append(f"| {check['name']} | {'ok' if check['ok'] else 'FAIL'} | {detail} |")
    lines += ["", "## Jobs by kind", ""]
    columns = ["jobs", "completed", "dead", "canceled", "as predicted", "attempts"]
    lines.append("| kind | " + " | ".join(columns) + " |")
    lines.append("|---|" + "---:|" * len(columns))
    for row in data["job_mix"]:
        lines.append(
            f"| {row['kind']} | " + " | ".join(str(row.get(col, 0)) for col in columns) + " |"
        )
    lines += ["", "(attempts: the most attempts one job of that kind used)", "", "## Faults", ""]
    for event in data["fault_events"]:
        lines.append(
            f"- {event['at_s']:.1f} s +{event['duration_s']:.1f} s **{event['kind']}** on "
            f"{event['target']}: {event['detail']}; {len(event['affected'])} jobs affected"
        )
    wakeup = data["observations"].get("wakeup") or {}
    if wakeup:
        lines += [
            "",
            "## Wake subscription",
            "",
            "Time each worker ran without its jobs:assignments subscription (polling over HTTP "
            "instead): start-ups, restarts and the sockets the faults cut.",
            "",
            "| worker | socket outages | without subscription (s) |",
            "|---|---:|---:|",
        ]
        for name, row in wakeup.items():
            lines.append(f"| {name} | {row['outages']} | {row['without_subscription_s']:.1f} |")
    if data["errors"]:
        lines += ["", "## Harness errors", ""] + [f"- {e}" for e in data["errors"]]
    lines += ["", "Timeline: `timeline.png`.", ""]
    return "\n".join(lines)


def write_report(
    out: Path,
    *,
    run_id: str,
    config: RunConfig,
    ok: bool,
    wall_s: float,
    t0: float,
    rows: list[FaultRow],
    total: dict[str, Any],
    checks: list[CheckResult],
    mix: list[dict[str, Any]],
    events: list[FaultEvent],
    observations: dict[str, Any],
    errors: list[str],
) -> dict[str, Any]:
    data: dict[str, Any] = {
        "run_id": run_id,
        "ok": ok,
        "wall_s": round(wall_s, 1),
        "config": config.model_dump(mode="json"),
        "faults": [r.model_dump() for r in rows],
        "totals": total,
        "checks": [c.model_dump() for c in checks],
        "job_mix": mix,
        "fault_events": [
            {
                **e.model_dump(mode="json"),
                "at_s": round(e.start - t0, 2),
                "duration_s": round(e.end - e.start, 2),
            }
            for e in events
        ],
        "observations": observations,
        "errors": errors,
    }
    (out / "report.json").write_text(json.dumps(data, indent=2) + "\n")
    (out / "report.md").write_text(render_markdown(data))
    return data
