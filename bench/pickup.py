"""Job pickup latency (enqueue -> claim), p50 and p95, with workers idle and with workers busy.

Latency is measured on the backend's clock: the job record's ``createdAt`` against the claim
time, ``leaseUntil - LEASE_MS`` from the claim reply (the worker logs it in ``job.claimed``).
Workers run the production timings (POLL_INTERVAL 5 s, IDLE_POLL_MAX 30 s) and the fake
``claude``.

- idle: one worker that has been idle long enough for its back-off to reach the 30 s
  ceiling (36 s after its last job), then a job at a random moment within the next 30 s.
  Several lanes (a backend and a worker each) run side by side to collect more samples in
  the time: the ramp after each job (5, 10, 20 s) makes one sample cost about a minute.
- busy: two workers fed a Poisson stream of jobs (mean gap PICKUP_BUSY_GAP_S, 3 s) that each
  take about 2 s of fake Claude, so the workers are usually running a job when the next
  one arrives; the latency then includes waiting for a free worker.

Run: .venv/bin/python bench/pickup.py [--mode idle|busy|both] [--json]
Env: PICKUP_IDLE_BUDGET_S (420), PICKUP_IDLE_LANES (3), PICKUP_BUSY_JOBS (30).
"""

from __future__ import annotations

import os
import random
import sys
import threading
import time

from common import (
    Row,
    Stack,
    claim_time_s,
    emit,
    for_job,
    log,
    percentile,
    small_repo,
    stack,
)

LEASE_MS = 90_000  # the worker's default, which these workers run with
CEILING_S = 30.0
RAMP_S = 36.0  # polls at 0, 5, 15, 35 s after a job: from then on every 30 s


def latency(s: Stack, job_id: str, claimed: dict[str, object]) -> float:
    created = float(s.backend.job(job_id)["createdAt"]) / 1000.0
    return claim_time_s(claimed, LEASE_MS) - created


def idle_lane(index: int, budget_s: float, out: list[float], errors: list[str]) -> None:
    rng = random.Random()
    try:
        with stack(f"pickup-idle-{index}") as s:
            repo = s.add_repo("small", small_repo())
            worker = s.start_worker(f"idle{index}")
            end = time.monotonic() + budget_s
            quiet_since = time.monotonic()
            while True:
                delay = max(0.0, RAMP_S - (time.monotonic() - quiet_since))
                delay += rng.uniform(0.0, CEILING_S)
                # A sample needs its delay plus up to 30 s for the claim plus the job.
                if time.monotonic() + delay + CEILING_S + 10 > end:
                    break
                time.sleep(delay)
                job_id = s.backend.enqueue(repo)
                claimed = worker.wait_event("job.claimed", CEILING_S + 30, for_job(job_id))
                out.append(latency(s, job_id, claimed))
                s.backend.wait_status(job_id, {"completed", "dead", "failed"}, 60)
                quiet_since = time.monotonic()
                log(f"lane {index}: idle pickup {out[-1]:.2f} s")
    except Exception as exc:  # a lane reports its failure, the other lanes carry on
        errors.append(f"lane {index}: {exc}")


def measure_idle() -> list[Row]:
    budget = float(os.environ.get("PICKUP_IDLE_BUDGET_S", "420"))
    lanes = int(os.environ.get("PICKUP_IDLE_LANES", "3"))
    samples: list[float] = []
    errors: list[str] = []
    threads = [
        threading.Thread(target=idle_lane, args=(i, budget, samples, errors)) for i in range(lanes)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    note = (
        f"n={len(samples)}; one worker idle at its 30 s back-off ceiling, job at a random "
        f"moment; {lanes} lanes over {budget:.0f} s"
    )
    if errors:
        note += "; errors: " + " | ".join(errors)
    return [
        Row("pickup latency p50, workers idle", percentile(samples, 50), "s", note=note),
        Row("pickup latency p95, workers idle", percentile(samples, 95), "s"),
    ]


def measure_busy() -> list[Row]:
    jobs = int(os.environ.get("PICKUP_BUSY_JOBS", "30"))
    gap = float(os.environ.get("PICKUP_BUSY_GAP_S", "3"))
    rng = random.Random()
    samples: list[float] = []
    with stack("pickup-busy") as s:
        repo = s.add_repo("small", small_repo())
        # Five Claude steps of 0.4 s each: about 2 s of Claude per job.
        workers = [s.start_worker(f"busy{i}", FAKE_CLAUDE_DELAY="0.4") for i in range(2)]
        ids: list[str] = []
        for _ in range(jobs):
            ids.append(s.backend.enqueue(repo))
            time.sleep(rng.expovariate(1.0 / gap))
        claims: dict[str, dict[str, object]] = {}
        deadline = time.monotonic() + 180
        while len(claims) < len(ids) and time.monotonic() < deadline:
            for w in workers:
                for e in w.events("job.claimed"):
                    claims.setdefault(str(e.get("job_id")), e)
            time.sleep(0.5)
        for job_id in ids:
            if job_id in claims:
                samples.append(latency(s, job_id, claims[job_id]))
        for job_id in ids:
            s.backend.wait_status(job_id, {"completed", "dead", "failed"}, 120)
    note = (
        f"n={len(samples)} of {jobs}; 2 workers, Poisson arrivals every {gap:.0f} s on "
        "average, about 2 s of fake Claude per job (includes waiting for a free worker)"
    )
    return [
        Row("pickup latency p50, workers busy", percentile(samples, 50), "s", note=note),
        Row("pickup latency p95, workers busy", percentile(samples, 95), "s"),
    ]


def main() -> int:
    mode = "both"
    if "--mode" in sys.argv:
        mode = sys.argv[sys.argv.index("--mode") + 1]
    rows: list[Row] = []
    if mode in ("idle", "both"):
        rows += measure_idle()
    if mode in ("busy", "both"):
        rows += measure_busy()
    emit("pickup latency", rows)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
