"""Worker overhead per job, Claude excluded (claim, clone, upload, complete), on a 1,000-file
repository served by the loopback HTTPS git server, with the fake ``claude`` answering at once.

The stages come from the worker's own JSON log (LOG_LEVEL=debug): ``convex.call`` lines carry
each call's milliseconds, and ``job.claimed``, ``job.started``, ``job.cloned``,
``step.started``/``step.finished`` (with the Claude process's seconds), ``docs.uploaded`` and
``job.completed`` carry timestamps. Overhead = from the start of the successful claim call to
the end of ``jobs:complete``, minus the Claude steps (``step.started`` to ``step.finished``).

The floor is measured in the same run, on the same servers: a plain ``git clone --depth 1``
of the same repository plus one round trip per call a job needs (the claim, which starts
the job, and ``jobs:complete``, which carries the documents), timed as a real mutation
(``jobs:claimOne`` on an empty queue). The worker process's own CPU time per job (utime +
stime from /proc, its children excluded) comes from the same jobs.

Run: .venv/bin/python -m bench.overhead [--json]   (OVERHEAD_JOBS, default 5)
Targets (issue 14): at most 1 s, and at most 1.3 times the floor.
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.common import (
    Row,
    Worker,
    emit,
    for_job,
    iso_to_epoch,
    log,
    met_at_most,
    run,
    stack,
    thousand_file_repo,
)

TARGET_S = 1.0
TARGET_RATIO = 1.3
CALLS_PER_JOB = 2  # claimOne (start=True) and jobs:complete (with the last batch)
CLK_TCK = os.sysconf("SC_CLK_TCK")


def cpu_s(pid: int) -> float:
    """utime + stime of the process (all its threads, no children), in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def plain_clone_s(url: str, cert: Path) -> float:
    env = {**os.environ, "GIT_SSL_CAINFO": str(cert), "GIT_TERMINAL_PROMPT": "0"}
    with tempfile.TemporaryDirectory(prefix="bench-floor-") as tmp:
        t0 = time.monotonic()
        done = run(
            ["git", "clone", "--depth", "1", "--", url, f"{tmp}/repo"],
            120,
            env=env,
            capture_output=True,
        )
        elapsed = time.monotonic() - t0
    if done.returncode != 0:
        raise RuntimeError(f"plain clone failed: {done.stderr[-500:]}")
    return elapsed


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
        "start_call": calls.get("jobs:start", 0.0),  # 0 since claims start the job
        "collect_upload": marks["docs.uploaded"] - marks["last_step"],
        # Between the uploads and the complete call (the workspace is now removed after it).
        "before_complete": marks["job.completed"] - complete - marks["docs.uploaded"],
        "complete_call": complete,
    }


def mean(values: list[float]) -> float:
    return sum(values) / len(values)


def main() -> int:
    count = int(os.environ.get("OVERHEAD_JOBS", "5"))
    load_before = os.getloadavg()[0]
    results: list[dict[str, float]] = []
    cpu: list[float] = []
    clones: list[float] = []
    rtts: list[float] = []
    with stack("overhead") as s:
        repo = s.add_repo("thousand", thousand_file_repo())
        worker: Worker = s.start_worker("overhead", POLL_INTERVAL_MS="200", IDLE_POLL_MAX_MS="200")
        for i in range(count):
            before = cpu_s(worker.process.pid)
            job_id = s.backend.enqueue(repo)
            s.backend.wait_status(job_id, {"completed", "dead", "failed"}, 120)
            worker.wait_event("job.completed", 10, for_job(job_id))
            cpu.append(cpu_s(worker.process.pid) - before)
            results.append(stages(worker.events(), job_id))
            log(f"job {i + 1}/{count}: overhead {results[-1]['overhead']:.2f} s")
        worker.stop()  # the floor is measured with the worker gone, on the same servers
        for _ in range(count):
            clones.append(plain_clone_s(repo, s.git.cert))
        with s.backend.client() as convex:
            for i in range(count):
                t0 = time.monotonic()
                if convex.claim_one("bench-floor", 60_000, f"floor-{i}") is not None:
                    raise RuntimeError("the queue should be empty")
                rtts.append(time.monotonic() - t0)
    overhead = mean([r["overhead"] for r in results])
    floor = mean(clones) + CALLS_PER_JOB * mean(rtts)
    ratio = overhead / floor
    named = (
        "claim",
        "clone",
        "start_call",
        "collect_upload",
        "before_complete",
        "complete_call",
    )
    for r in results:
        r["other"] = r["overhead"] - sum(r[k] for k in named)
    parts = ", ".join(f"{k} {mean([r[k] for r in results]):.2f}" for k in (*named, "other"))
    rows = [
        Row(
            "worker overhead per job, Claude excluded",
            overhead,
            "s",
            f"<= {TARGET_S:.1f} s and <= {TARGET_RATIO}x floor",
            met_at_most(overhead, TARGET_S) and ratio <= TARGET_RATIO,
            baseline=f"floor {floor:.2f} s",
            ratio=f"{ratio:.2f}x",
            note=(
                f"mean of {count} jobs on a 1,000-file repo (max "
                f"{max(r['overhead'] for r in results):.2f} s); stages in s: {parts}; "
                f"fake Claude steps {mean([r['claude'] for r in results]):.2f} s excluded. "
                f"Floor, same run: plain `git clone --depth 1` {mean(clones):.2f} s + "
                f"{CALLS_PER_JOB} round trips of {mean(rtts) * 1000:.0f} ms; load average "
                f"{load_before:.1f} before, {os.getloadavg()[0]:.1f} after"
            ),
        ),
        Row(
            "worker CPU per job (process only, short job)",
            mean(cpu),
            "s",
            note=(
                f"utime+stime of `fondation-worker run` from enqueue to job.completed, "
                f"children (git, claude) excluded; max {max(cpu):.3f} s; POLL_INTERVAL_MS 200 ms"
            ),
        ),
    ]
    emit("worker overhead", rows)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
