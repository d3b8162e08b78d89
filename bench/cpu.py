"""The worker process's own CPU per job while Claude works, with production timings.

One worker (POLL_INTERVAL_MS 5 s, LEASE_MS 90 s, HEARTBEAT_MS 20 s, LOG_LEVEL info as shipped)
runs jobs whose fake Claude steps take FAKE_CLAUDE_DELAY seconds each (5 steps), so each job
lasts about half a minute, almost all of it waiting on Claude with every job slot busy: the
state in which the scheduler used to spin. Measured: utime + stime of the worker process
(all its threads, children such as git and claude excluded) from enqueue to completion.

Run: .venv/bin/python -m bench.cpu [--json]   (CPU_JOBS, default 3; CPU_STEP_S, default 6)
Target (issue 14): at most 0.1 s per job.
"""

from __future__ import annotations

import os
import time

from bench.common import Row, emit, for_job, log, met_at_most, small_repo, stack
from bench.overhead import cpu_s

TARGET_S = 0.1


def main() -> int:
    count = int(os.environ.get("CPU_JOBS", "3"))
    step_s = float(os.environ.get("CPU_STEP_S", "6"))
    per_job: list[float] = []
    lengths: list[float] = []
    with stack("cpu") as s:
        repo = s.add_repo("small", small_repo())
        worker = s.start_worker("cpu", FAKE_CLAUDE_DELAY=f"{step_s:g}", LOG_LEVEL="info")
        for i in range(count):
            before = cpu_s(worker.process.pid)
            t0 = time.monotonic()
            job_id = s.backend.enqueue(repo)
            s.backend.wait_status(job_id, {"completed", "dead", "failed"}, 60 + 10 * step_s)
            worker.wait_event("job.completed", 10, for_job(job_id))
            per_job.append(cpu_s(worker.process.pid) - before)
            lengths.append(time.monotonic() - t0)
            log(f"job {i + 1}/{count}: {per_job[-1]:.3f} s CPU over {lengths[-1]:.1f} s")
    value = sum(per_job) / len(per_job)
    rows = [
        Row(
            "worker CPU per job, Claude and git excluded",
            value,
            "s",
            f"<= {TARGET_S} s",
            met_at_most(value, TARGET_S),
            note=(
                f"mean of {count} jobs of {sum(lengths) / len(lengths):.0f} s each (5 fake "
                f"Claude steps of {step_s:g} s), production timings; each: "
                f"{', '.join(f'{c:.3f}' for c in per_job)} s; utime+stime of the worker "
                "process from /proc, children excluded"
            ),
        )
    ]
    emit("worker CPU per job", rows)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
