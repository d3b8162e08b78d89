"""``python -m chaos.run``: a chaos run against real worker containers; exit 1 when an
invariant fails.

    python -m chaos.run --jobs 200 --workers 3 --duration 420 --seed 1 --out build/chaos

Writes build/chaos/<run>/: report.md, report.json, timeline.png, the worker and dev
backend logs, the fake claude's shared log.
"""

from __future__ import annotations

import secrets
import shutil
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer

from fondation_worker.contract import TERMINAL_STATUSES
from fondation_worker.logging_setup import configure_logging
from fondation_worker.redact import Redactor
from tests.support import REPO_ROOT

from .cluster import Cluster
from .faults import FaultInjector, plan_faults
from .invariants import (
    check_dedupe,
    check_final_states,
    check_landlock,
    check_no_extra_jobs,
    check_no_overlap,
    check_recovery,
    check_secrets,
    check_single_completion,
    check_temp_dirs,
    close_open_executions,
    completions,
    read_worker_log,
)
from .load import LoadDriver, plan_jobs
from .models import CheckResult, RunConfig, SecretHit
from .observe import Sampler, StatePoller, find_secrets, read_executions, temp_dir_leftovers
from .report import fault_rows, job_mix, subscription_downtime, totals, write_report
from .timeline import draw

app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)


def say(message: str) -> None:
    stamp = datetime.now(UTC).strftime("%H:%M:%S")
    print(f"[chaos {stamp}] {message}", flush=True)


@app.command()
def main(
    jobs: Annotated[int, typer.Option(help="jobs in the mixed load")] = 200,
    workers: Annotated[int, typer.Option(help="worker containers (3 or more)")] = 3,
    duration: Annotated[float, typer.Option(help="seconds of load and faults")] = 420,
    seed: Annotated[int, typer.Option(help="seeds the load, the faults and the fake")] = 1,
    out: Annotated[Path, typer.Option(help="parent of the run directory")] = Path("build/chaos"),
    image: Annotated[str, typer.Option(help="the worker image")] = "fondation-worker:latest",
    name: Annotated[str | None, typer.Option(help="run directory name")] = None,
    settle: Annotated[
        float | None, typer.Option(help="seconds to wait for the last jobs (default 4 s a job)")
    ] = None,
) -> None:
    started = time.time()
    run_id = f"{datetime.now(UTC).strftime('%m%d%H%M%S')}-{secrets.token_hex(2)}"
    run_dir = (out if out.is_absolute() else REPO_ROOT / out) / (name or run_id)
    if run_dir.exists():
        shutil.rmtree(run_dir)  # a named run starts clean: job ids repeat across backends
    run_dir.mkdir(parents=True)
    config = RunConfig(
        jobs=jobs,
        workers=workers,
        duration_s=duration,
        seed=seed,
        out=run_dir,
        image=image,
        # A job takes 10-15 s on a busy 2-core machine; the disk fault defers one by 5 min.
        settle_timeout_s=settle if settle is not None else max(480.0, 4.0 * jobs),
    )
    say(f"run {run_id}: {jobs} jobs, {workers} workers, {duration:.0f} s, seed {seed} -> {run_dir}")
    cluster = Cluster(config, run_dir, run_id)
    # The Convex client's own log lines: warnings only, tokens redacted.
    configure_logging(
        Redactor(cluster.secrets.values.values()),
        log_format="console",
        level="warning",
        stream=sys.stderr,
    )
    ok = False
    try:
        ok = _run(cluster, config, run_dir, run_id, started)
    finally:
        say("tearing down")
        cluster.down()
    say(f"{'PASS' if ok else 'FAIL'} in {time.time() - started:.0f} s: {run_dir / 'report.md'}")
    raise typer.Exit(0 if ok else 1)


def _run(cluster: Cluster, config: RunConfig, run_dir: Path, run_id: str, started: float) -> bool:
    cluster.up()
    assert cluster.git is not None
    say(
        f"fleet up in {time.time() - started:.0f} s: backend {cluster.backend_url}, "
        f"git {cluster.git.host}"
    )
    poller = StatePoller(cluster, config.observe_interval_s)
    poller.start()
    sampler = Sampler(cluster)
    sampler.start()

    load_window = config.duration_s * 0.8
    plan = plan_jobs(config.jobs, load_window, config.seed, run_id)
    faults = plan_faults(config, config.duration_s)
    say(f"faults: {faults}")
    t0 = time.time()
    load = LoadDriver(cluster, plan, poller.status_of, t0, config.settle_timeout_s)
    injector = FaultInjector(cluster, poller, faults, t0)
    load.start()
    injector.start()

    injector.done.wait(config.duration_s + 600)
    load.done.wait(config.duration_s + config.settle_timeout_s)
    say(f"load and faults done at {time.time() - t0:.0f} s; waiting for every job to end")
    job_ids = [j.job_id for j in load.snapshot()]
    deadline = time.time() + config.settle_timeout_s
    last_report = 0.0
    while time.time() < deadline and not poller.all_terminal(job_ids):
        if time.time() - last_report > 30:
            left = [j for j in job_ids if poller.status_of(j) not in TERMINAL_STATUSES]
            say(f"{len(left)} jobs not ended yet")
            last_report = time.time()
        time.sleep(1)
    run_end = time.time()
    say(f"settled at {run_end - t0:.0f} s")

    sampler.stop()
    poller.poll()
    poller.stop()
    # Final workspace scans (after the last jobs), then a clean stop of the fleet.
    for worker in cluster.workers:
        sampler.scan_workspace(worker)
    cluster.stop_supervisor()
    cluster.stop_workers()
    docker_logs = cluster.save_logs()
    leftovers = temp_dir_leftovers(cluster)
    return _verdict(
        cluster,
        config,
        run_dir,
        run_id,
        started,
        t0,
        run_end,
        load,
        injector,
        poller,
        sampler,
        docker_logs,
        leftovers,
    )


def settled_docs(cluster: Cluster, timeout_s: float = 60) -> list[dict[str, Any]]:
    """The documents once the purges have run: an ended job's other runs are deleted by a
    scheduled docs:purgeStale after it ends, not in the ending transaction. Waits (with a
    deadline) until no ended job keeps a run other than its visible one; past the deadline
    the rows are returned as they are and the invariants say what is left."""
    deadline = time.monotonic() + timeout_s
    while True:
        jobs = {str(row["_id"]): row for row in cluster.dump("jobs")}
        docs = cluster.dump("docs")
        stale = [
            doc
            for doc in docs
            if jobs.get(str(doc["jobId"]), {}).get("status") in TERMINAL_STATUSES
            and doc["runId"] != jobs[str(doc["jobId"])].get("docsRunId")
        ]
        if not stale or time.monotonic() > deadline:
            return docs
        time.sleep(0.5)


def _verdict(
    cluster: Cluster,
    config: RunConfig,
    run_dir: Path,
    run_id: str,
    started: float,
    t0: float,
    run_end: float,
    load: LoadDriver,
    injector: FaultInjector,
    poller: StatePoller,
    sampler: Sampler,
    docker_logs: dict[str, Path],
    leftovers: dict[str, list[str]],
) -> bool:
    jobs = load.snapshot()
    events = injector.events
    job_rows = cluster.dump("jobs")
    doc_rows = settled_docs(cluster)
    secret_rows = cluster.dump("jobSecrets")

    logs = []
    for worker in cluster.workers:
        logs += read_worker_log(worker.name, worker.log_dir / f"worker-{worker.name}.log")
    executions = close_open_executions(
        read_executions(cluster.shared / "log", cluster.lifecycle, run_end), logs
    )

    # Secrets: every log, every Convex table, the process samples, the workspaces.
    values = cluster.secrets.values
    hits: list[SecretHit] = list(sampler.hits)
    files = [*docker_logs.values(), run_dir / "devbackend.log"]
    files += sorted((run_dir / "logs").glob("*/*.log*")) + sorted(
        (cluster.shared / "log").glob("*")
    )
    for path in files:
        hits += find_secrets(path.read_text(errors="replace"), values, f"log {path.name}")
    for table in ("jobs", "docs", "docContents", "counters", "queueBuckets", "statsBuckets"):
        dumped = (
            job_rows if table == "jobs" else doc_rows if table == "docs" else cluster.dump(table)
        )
        hits += find_secrets(repr(dumped), values, f"convex {table}")
    secret_check = check_secrets(
        hits,
        [
            f"{len(files)} log files",
            "5 Convex tables",
            f"{sampler.process_samples} process tables ({sampler.processes_seen} processes, "
            f"{sampler.git_processes_seen} git)",
            f"{sampler.workspace_scans} workspace scans ({sampler.workspace_files_seen} files)",
        ],
    )

    completed_by = completions(logs)
    single, double_jobs = check_single_completion(
        jobs, poller.latest, completed_by, job_rows, doc_rows
    )
    overlap, overlap_jobs = check_no_overlap(executions)
    recovery, times = check_recovery(events, poller.history)
    duplicated = double_jobs | overlap_jobs
    checks: list[CheckResult] = [
        check_final_states(jobs, poller.latest),
        check_no_extra_jobs(jobs, poller.latest),
        check_dedupe(jobs, poller.history, config.observe_interval_s),
        single,
        overlap,
        recovery,
        secret_check,
        CheckResult(
            name="private tokens deleted",
            ok=not secret_rows,
            detail=f"{len(secret_rows)} jobSecrets rows left after every job ended",
        ),
        check_temp_dirs(leftovers),
        check_landlock({w.name: w.log_dir / f"worker-{w.name}.log" for w in cluster.workers}),
        CheckResult(
            name="every fault kind injected",
            ok={e.kind for e in events} >= {"sigkill", "netcut", "pause", "disk", "rolling", "auth"}
            and not injector.errors,
            detail=f"{len(events)} faults injected, {len(injector.errors)} injection errors",
        ),
    ]
    ok = all(c.ok for c in checks)
    rows = fault_rows(events, times, jobs, poller.latest, duplicated)
    total = totals(rows, jobs, poller.latest, duplicated)
    data = write_report(
        run_dir,
        run_id=run_id,
        config=config,
        ok=ok,
        wall_s=time.time() - started,
        t0=t0,
        rows=rows,
        total=total,
        checks=checks,
        mix=job_mix(jobs, poller.latest),
        events=events,
        observations={
            "state_polls": poller.polls,
            "claude_runs": len(executions),
            "worker_restarts": {w.name: w.restarts for w in cluster.workers},
            "crashes": sum(1 for e in cluster.lifecycle if e.what == "crashed"),
            "wakeup": subscription_downtime(
                {w.name: w.log_dir / f"worker-{w.name}.log" for w in cluster.workers},
                time.time(),
            ),
            "load_seconds": round(run_end - t0, 1),
            "jobs": [
                {
                    "job_id": j.job_id,
                    "kind": j.plan.kind,
                    "expected": j.expected,
                    "final": poller.latest[j.job_id].status if j.job_id in poller.latest else None,
                    "attempts": poller.latest[j.job_id].attempts
                    if j.job_id in poller.latest
                    else 0,
                    "cancel_reply": j.cancel_reply,
                }
                for j in jobs
            ],
        },
        errors=injector.errors + sorted(set(load.errors)),
    )
    draw(
        run_dir / "timeline.png",
        executions,
        events,
        cluster.lifecycle,
        [w.name for w in cluster.workers],
        t0,
        f"chaos run {run_id}: {config.jobs} jobs, {config.workers} workers, seed {config.seed}"
        f" - {'PASS' if ok else 'FAIL'}",
    )
    print((run_dir / "report.md").read_text())
    del data
    return ok


if __name__ == "__main__":
    sys.exit(app())
