"""Crash recovery time: kill -9 of a worker mid-job until the job runs again on another worker.

Production timings throughout (LEASE_MS 90 s, HEARTBEAT_MS 20 s, POLL_INTERVAL_MS 5 s,
IDLE_POLL_MAX_MS 30 s, the upkeep cron every 30 s). Worker A claims a job whose fake Claude
step takes minutes; worker B starts and idles, and A and its children are killed with
SIGKILL at a random moment. The first dispatcher tick after A's last lease ran out (the
upkeep cron's, at least every 30 s) returns the job to the queue and hands it to B's idle
slot, which B accepts at once. Measured on one clock (this host's): the kill, and B's claim
(``leaseUntil - LEASE_MS`` of B's claim) and ``startedAt`` (the job running again). Expected:
the lease left at the kill (70-90 s) plus up to 30 s until the next tick.

Second case, the host survives (``--mode restart``): A holds the job under a fixed WORKER_ID
and is killed the same way; 5 s later (systemd's RestartSec) a new process starts with the
same WORKER_ID, as systemd restarts the replica. It gives back what its predecessor held
(``jobs:recoverWorker``) and claims the job again. Measured: the kill to ``startedAt`` of the
new attempt. Target (issue 14): at most 15 s.

Run: .venv/bin/python -m bench.crash [--json] [--mode both|restart|lost-host]
     (CRASH_SAMPLES, default 2)
"""

from __future__ import annotations

import os
import random
import sys
import time

from bench.common import (
    Row,
    claim_time_s,
    emit,
    for_job,
    log,
    met_at_most,
    percentile,
    small_repo,
    stack,
)

LEASE_MS = 90_000
HEARTBEAT_MS = 20_000
IDLE_POLL_MAX_MS = 30_000
RESTART_SEC = 5.0  # the systemd unit's RestartSec
RESTART_TARGET_S = 15.0


def restart_sample(index: int) -> float:
    """kill -9 of A, the same WORKER_ID back RESTART_SEC later: seconds until running again."""
    with stack(f"restart-{index}") as s:
        repo = s.add_repo("small", small_repo())
        worker_id = f"bench-host-{index}-1"
        a = s.start_worker(f"a{index}", WORKER_ID=worker_id, FAKE_CLAUDE_DELAY="900")
        job_id = s.backend.enqueue(repo)
        a.wait_event("step.started", 240, for_job(job_id))
        killed = time.time()
        a.kill9(family=True)
        time.sleep(RESTART_SEC)
        s.start_worker(f"a{index}-restarted", wait_healthy=False, WORKER_ID=worker_id)
        deadline = time.monotonic() + LEASE_MS / 1000 + 60
        while True:
            job = s.backend.job(job_id)
            if job["status"] == "running" and job["attempts"] == 2 and job.get("startedAt"):
                return float(job["startedAt"]) / 1000 - killed
            if time.monotonic() > deadline:
                raise RuntimeError(f"job {job_id} not running again: {job['status']}")
            time.sleep(0.1)


def one_sample(index: int) -> tuple[float, float]:
    rng = random.Random()
    with stack(f"crash-{index}") as s:
        repo = s.add_repo("small", small_repo())
        a = s.start_worker(f"a{index}", FAKE_CLAUDE_DELAY="900")
        job_id = s.backend.enqueue(repo)
        a.wait_event("step.started", 240, for_job(job_id))
        b = s.start_worker(f"b{index}")
        time.sleep(36 + rng.uniform(0, HEARTBEAT_MS / 1000))  # B at its ceiling, random phase
        killed = time.time()
        a.kill9(family=True)
        log(f"sample {index}: killed A mid-job; waiting for B")
        wait_s = (LEASE_MS + IDLE_POLL_MAX_MS) / 1000 + 60
        claimed = b.wait_event("job.claimed", wait_s, for_job(job_id))
        job = s.backend.wait_status(job_id, {"running", "completed"}, 60)
        running = float(job["startedAt"]) / 1000 if job.get("startedAt") else time.time()
        return claim_time_s(claimed, LEASE_MS) - killed, running - killed


def restart_rows(samples: int) -> list[Row]:
    runs = []
    for i in range(samples):
        runs.append(restart_sample(i))
        log(f"restart sample {i}: running again after {runs[-1]:.1f} s")
    value = percentile(runs, 50)
    return [
        Row(
            "crash recovery, host survives (kill -9, restart -> running again)",
            value,
            "s",
            f"<= {RESTART_TARGET_S:.0f} s",
            met_at_most(value, RESTART_TARGET_S),
            note=(
                f"median of {samples} (each: {', '.join(f'{r:.1f}' for r in runs)} s); the same "
                f"WORKER_ID restarted {RESTART_SEC:.0f} s after the kill (RestartSec), "
                f"LEASE_MS {LEASE_MS // 1000} s"
            ),
        )
    ]


def main() -> int:
    samples = int(os.environ.get("CRASH_SAMPLES", "2"))
    mode = sys.argv[sys.argv.index("--mode") + 1] if "--mode" in sys.argv else "both"
    rows = restart_rows(samples) if mode in ("both", "restart") else []
    if mode == "restart":
        emit("crash recovery", rows)
        return 0
    claims: list[float] = []
    runs: list[float] = []
    for i in range(samples):
        claim_s, run_s = one_sample(i)
        claims.append(claim_s)
        runs.append(run_s)
        log(f"sample {i}: claimed again after {claim_s:.1f} s, running after {run_s:.1f} s")
    worst = (LEASE_MS + IDLE_POLL_MAX_MS) / 1000
    rows += [
        Row(
            "crash recovery, host lost (kill -9 -> job running again elsewhere)",
            percentile(runs, 50),
            "s",
            note=(
                f"median of {samples} (each: {', '.join(f'{r:.0f}' for r in runs)} s; "
                f"claimed again after {', '.join(f'{c:.0f}' for c in claims)} s); "
                f"bound: LEASE_MS + IDLE_POLL_MAX_MS = {worst:.0f} s plus the clone"
            ),
        )
    ]
    emit("crash recovery", rows)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
