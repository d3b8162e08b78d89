"""Worker overhead per job, Claude excluded (claim, clone, upload, complete), on a 1,000-file
repository served by the loopback HTTPS git server, with the fake ``claude`` answering at once.

The stages come from the worker's own JSON log (LOG_LEVEL=debug): ``convex.call`` lines carry
each call's milliseconds, and ``job.claimed``, ``job.started``, ``job.cloned``,
``step.started``/``step.finished`` (with the Claude process's seconds), ``docs.uploaded`` and
``job.completed`` carry timestamps. Overhead = from the start of the successful claim call to
the end of ``jobs:complete``, minus the Claude steps (``step.started`` to ``step.finished``).

Run: .venv/bin/python bench/overhead.py [--json]   (OVERHEAD_JOBS, default 5)
Target (issue 9): at most 2 s locally.
"""

from __future__ import annotations

import os
from typing import Any

from common import (
    Row,
    Worker,
    emit,
    for_job,
    iso_to_epoch,
    log,
    met_at_most,
    stack,
    thousand_file_repo,
)

TARGET_S = 2.0


def stages(events: list[dict[str, Any]], job_id: str) -> dict[str, float]:
    """Seconds per stage of one job, from the worker's log lines in order."""
    claim_ms = 0.0
    first = -1
    for index, e in enumerate(events):
        if e.get("event") == "convex.call" and e.get("function") == "jobs:claimOne":
            claim_ms = float(e.get("ms", 0))  # the last claim before our job.claimed
        if e.get("event") == "job.claimed" and e.get("job_id") == job_id:
            first = index
            break
    if first < 0:
        raise RuntimeError(f"job {job_id} was not claimed")
    calls: dict[str, float] = {}
    claude = 0.0
    step_started = 0.0
    marks: dict[str, float] = {"job.claimed": iso_to_epoch(events[first]["ts"])}
    for e in events[first + 1 :]:
        name = str(e.get("event"))
        if name == "job.claimed":
            break
        at = iso_to_epoch(e["ts"])
        if name == "convex.call":
            fn = str(e.get("function"))
            calls[fn] = calls.get(fn, 0.0) + float(e.get("ms", 0)) / 1000
        elif name == "step.started":
            step_started = at
        elif name == "step.finished":
            # The whole Claude step as the worker sees it: spawn, run, exit.
            claude += at - step_started
            marks["last_step"] = at
        elif name in ("job.started", "job.cloned", "docs.uploaded", "job.completed"):
            marks[name] = at
        if name == "job.completed":
            break
    start = marks["job.claimed"] - claim_ms / 1000
    total = marks["job.completed"] - start
    complete = calls.get("jobs:complete", 0.0)
    return {
        "total": total,
        "claude": claude,
        "overhead": total - claude,
        "claim": claim_ms / 1000,
        "clone": marks["job.cloned"] - marks["job.started"],
        "start_call": calls.get("jobs:start", 0.0),
        "collect_upload": marks["docs.uploaded"] - marks["last_step"],
        # Between the upload and the complete call: leaving the job workspace (its removal).
        "cleanup": marks["job.completed"] - complete - marks["docs.uploaded"],
        "complete_call": complete,
    }


def mean(values: list[float]) -> float:
    return sum(values) / len(values)


def main() -> int:
    count = int(os.environ.get("OVERHEAD_JOBS", "5"))
    results: list[dict[str, float]] = []
    with stack("overhead") as s:
        repo = s.add_repo("thousand", thousand_file_repo())
        worker: Worker = s.start_worker("overhead", POLL_INTERVAL="200", IDLE_POLL_MAX="200")
        for i in range(count):
            job_id = s.backend.enqueue(repo)
            s.backend.wait_status(job_id, {"completed", "dead", "failed"}, 120)
            worker.wait_event("job.completed", 10, for_job(job_id))
            results.append(stages(worker.events(), job_id))
            log(f"job {i + 1}/{count}: overhead {results[-1]['overhead']:.2f} s")
    overhead = mean([r["overhead"] for r in results])
    named = ("claim", "clone", "start_call", "collect_upload", "cleanup", "complete_call")
    for r in results:
        r["other"] = r["overhead"] - sum(r[k] for k in named)
    parts = ", ".join(f"{k} {mean([r[k] for r in results]):.2f}" for k in (*named, "other"))
    rows = [
        Row(
            "worker overhead per job, Claude excluded",
            overhead,
            "s",
            f"<= {TARGET_S:.0f} s",
            met_at_most(overhead, TARGET_S),
            note=(
                f"mean of {count} jobs on a 1,000-file repo (max "
                f"{max(r['overhead'] for r in results):.2f} s); stages in s: {parts}; "
                f"fake Claude steps {mean([r['claude'] for r in results]):.2f} s excluded"
            ),
        )
    ]
    emit("worker overhead", rows)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
