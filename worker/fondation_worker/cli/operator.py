"""The operator commands: enqueue, status, stuck, reclaim, requeue, cancel.

Each one reads Settings, calls one or two Convex functions with OPERATOR_TOKEN (``status``
with either token: config.CREDENTIALS) and prints what ``render`` makes of the reply; none
needs WORKER_TOKEN. ``app`` registers them.
See docs/RUNBOOK.md and playbooks/runbook-stuck-jobs.yml for how operators use them.
"""

from __future__ import annotations

import json
import os
import sys
import time
from typing import Annotated

import typer
from pydantic import SecretStr

from ..contract import LEASED_STATUSES, TERMINAL_STATUSES
from ..convex_client import ConvexClient
from ..errors import ConvexCodedError, InvalidState, NotFound, WorkerError
from ..models import PublicJob
from ..units import milliseconds
from . import render
from .support import (
    EXIT_CONFIG,
    EXIT_NOTHING_TO_DO,
    EXIT_TIMED_OUT,
    convex_or_exit,
    settings_or_exit,
)


def enqueue(
    repo: Annotated[str, typer.Argument(help="https://<host>/<owner>/<repo>")],
    branch: Annotated[str | None, typer.Option(help="Branch (default: the repo's)")] = None,
    wait: Annotated[bool, typer.Option(help="Follow the job until it ends")] = False,
    max_attempts: Annotated[int | None, typer.Option(min=1, max=10)] = None,
    user_id: Annotated[str | None, typer.Option(help="User the job belongs to")] = None,
    dedupe_key: Annotated[
        str | None,
        typer.Option(help="Reuse the user's active job with this key instead of a new one"),
    ] = None,
    github_token_env: Annotated[
        str | None,
        typer.Option(help="Name of an environment variable holding a GitHub token (private)"),
    ] = None,
    poll: Annotated[float, typer.Option(help="Seconds between status reads with --wait")] = 2.0,
    target_worker: Annotated[
        str | None,
        typer.Option(help="Only this worker (its WORKER_ID) may run the job: a canary's smoke job"),
    ] = None,
    timeout: Annotated[
        float | None,
        typer.Option(
            help="With --wait: cancel the job and exit 4 when it has not ended by then (s)"
        ),
    ] = None,
) -> None:
    """Queue a repository (operator, OPERATOR_TOKEN); --wait exits with the job's outcome."""
    settings = settings_or_exit("enqueue")
    token: SecretStr | None = None
    if github_token_env:
        raw = os.environ.get(github_token_env)
        if not raw:
            typer.echo(f"fondation-worker: {github_token_env} is not set", err=True)
            raise typer.Exit(EXIT_CONFIG)
        token = SecretStr(raw)
    with convex_or_exit(settings, "enqueue") as convex:
        try:
            reply = convex.enqueue(
                repo,
                branch,
                github_token=token,
                max_attempts=max_attempts,
                user_id=user_id,
                dedupe_key=dedupe_key,
                target_worker_id=target_worker,
            )
        except ConvexCodedError as exc:
            typer.echo(f"fondation-worker: refused: {exc}", err=True)
            raise typer.Exit(EXIT_CONFIG) from None
        except WorkerError as exc:
            typer.echo(f"fondation-worker: enqueue failed: {exc}", err=True)
            raise typer.Exit(1) from None
        typer.echo(f"job {reply.job_id} {'queued' if reply.created else 'already queued'}")
        if not wait:
            return
        raise typer.Exit(follow(convex, reply.job_id, poll, timeout))


def follow(convex: ConvexClient, job_id: str, poll_s: float, timeout_s: float | None = None) -> int:
    """Print the job's progress until it ends; ``enqueue --wait``'s exit code: 0 completed,
    3 canceled, 1 failed otherwise, 4 when ``timeout_s`` passed first (the job is then
    canceled, so nothing runs it later: a rollout's smoke job must not outlive its gate)."""
    tty = sys.stdout.isatty()
    last = ""
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    while True:
        if deadline is not None and time.monotonic() >= deadline:
            return _give_up(convex, job_id, timeout_s or 0.0)
        try:
            job = convex.get_job(job_id)
        except WorkerError as exc:
            typer.echo(f"\nfondation-worker: cannot read the job: {exc}", err=True)
            time.sleep(poll_s)
            continue
        if job is None:
            typer.echo(f"\nfondation-worker: job {job_id} not found", err=True)
            return 1
        line = render.progress_line(job)
        if tty:
            sys.stdout.write("\r\033[K" + line[:200])
            sys.stdout.flush()
        elif line != last:
            typer.echo(line)
        last = line
        if job.status in TERMINAL_STATUSES:
            if tty:
                sys.stdout.write("\n")
            if job.status == "completed":
                docs = job.result.docs_count if job.result else "?"
                typer.echo(f"job {job_id} completed: {docs} documents{render.dropped_note(job)}")
                return 0
            detail = f" ({job.last_error_kind}: {job.last_error})" if job.last_error else ""
            typer.echo(f"job {job_id} {job.status}{detail}")
            return 3 if job.status == "canceled" else 1
        time.sleep(poll_s)


def _give_up(convex: ConvexClient, job_id: str, timeout_s: float) -> int:
    try:
        after = convex.cancel(job_id).status
    except WorkerError as exc:
        after = f"cancel failed: {exc}"
    typer.echo(f"\njob {job_id} did not end within {timeout_s:g} s: canceled (now {after})")
    return EXIT_TIMED_OUT


def status(
    as_json: Annotated[bool, typer.Option("--json", help="Print the raw metrics as JSON")] = False,
) -> None:
    """Queue metrics (metrics:queue) as a table, or JSON for scripts."""
    settings = settings_or_exit("status")
    # Counts only: readable with either token, the operator's when set (config.CREDENTIALS).
    with convex_or_exit(settings, "status") as convex:
        try:
            metrics = convex.queue_metrics()
        except WorkerError as exc:
            typer.echo(f"fondation-worker: {exc}", err=True)
            raise typer.Exit(1) from None
    if as_json:
        typer.echo(json.dumps(metrics, indent=2, sort_keys=True))
        return
    for line in render.render_status(metrics):
        typer.echo(line)


# --- stuck jobs (docs/RUNBOOK.md, playbooks/runbook-stuck-jobs.yml) ----------------------


def convex_failure(exc: WorkerError) -> typer.Exit:
    typer.echo(f"fondation-worker: {exc}", err=True)
    return typer.Exit(1)


def stuck(
    running_longer_than: Annotated[
        int | None,
        typer.Option(
            "--running-longer-than",
            metavar="MS",
            min=0,
            help="Also list jobs running for longer than this many ms (default: JOB_TIMEOUT_MS)",
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print a JSON list")] = False,
) -> None:
    """List claimed/running jobs whose lease expired or that run too long (exit 0 either way)."""
    settings = settings_or_exit("stuck")
    threshold = settings.job_timeout_ms if running_longer_than is None else running_longer_than
    with convex_or_exit(settings, "stuck") as convex:
        try:
            jobs = convex.list_stuck(threshold)
        except WorkerError as exc:
            raise convex_failure(exc) from None
    if as_json:
        typer.echo(json.dumps([j.model_dump(by_alias=True, mode="json") for j in jobs], indent=2))
        return
    criteria = f"lease expired, or running longer than {render.duration(threshold)}"
    if not jobs:
        typer.echo(f"no stuck jobs ({criteria})")
        return
    lines = render.stuck_table(jobs, now_ms=milliseconds(time.time()))
    typer.echo(f"{len(jobs)} stuck job(s) ({criteria}):")
    for line in lines:
        typer.echo(line)


def reclaim(
    as_json: Annotated[bool, typer.Option("--json", help="Print the reply as JSON")] = False,
) -> None:
    """Run the reclaim cron's pass now: expired leases back to pending, or dead/canceled."""
    settings = settings_or_exit("reclaim")
    with convex_or_exit(settings, "reclaim") as convex:
        try:
            reply = convex.reclaim_now()
        except WorkerError as exc:
            raise convex_failure(exc) from None
    if as_json:
        typer.echo(json.dumps(reply.model_dump(by_alias=True, mode="json"), indent=2))
        return
    if reply.total == 0:
        typer.echo("no expired leases: nothing to reclaim")
    else:
        typer.echo(
            f"reclaimed {reply.total} expired lease(s): {reply.moved} back to pending, "
            f"{reply.dead} dead (no attempt left), {reply.canceled} canceled (cancel requested)"
        )
        for job in reply.jobs:
            typer.echo(f"  {job.job_id}  -> {job.outcome}")
    if reply.more:
        typer.echo("more expired leases remain: run `fondation-worker reclaim` again")


def job_or_exit(convex: ConvexClient, job_id: str) -> PublicJob:
    """The job an operator command acts on; exit 1 when it does not exist."""
    try:
        job = convex.get_job(job_id)
    except WorkerError as exc:
        raise convex_failure(exc) from None
    if job is None:
        typer.echo(f"fondation-worker: job {job_id} not found", err=True)
        raise typer.Exit(1)
    return job


def requeue(
    job_id: Annotated[str, typer.Argument(help="The dead job's id")],
    yes: Annotated[bool, typer.Option("--yes", help="Requeue without asking")] = False,
) -> None:
    """Put a dead job back in the queue (attempts reset, last error kept); needs --yes.
    Exit 0 requeued, 3 the job is not dead (nothing to do), 1 otherwise."""
    settings = settings_or_exit("requeue")
    with convex_or_exit(settings, "requeue") as convex:
        job = job_or_exit(convex, job_id)
        if job.status != "dead":
            typer.echo(
                f"fondation-worker: job {job_id} is {job.status}: only a dead job can be requeued",
                err=True,
            )
            raise typer.Exit(EXIT_NOTHING_TO_DO)
        for line in render.describe(job):
            typer.echo(line)
        if not yes:
            typer.echo("re-run with --yes to requeue")
            raise typer.Exit(1)
        try:
            requeued = convex.requeue(job_id)
        except (InvalidState, NotFound) as exc:
            # Raced with another change, or another job with the same dedupe key is active.
            typer.echo(f"fondation-worker: not requeued: {exc}", err=True)
            raise typer.Exit(1) from None
        except WorkerError as exc:
            typer.echo(
                f"fondation-worker: requeue failed: {exc} (check with `fondation-worker requeue "
                f"{job_id}`: it may have happened)",
                err=True,
            )
            raise typer.Exit(1) from None
    typer.echo(
        f"job {requeued.job_id} requeued: {requeued.status}, attempts reset to "
        f"{requeued.attempts}/{requeued.max_attempts}"
    )


def cancel(
    job_id: Annotated[str, typer.Argument(help="The job's id")],
    yes: Annotated[bool, typer.Option("--yes", help="Cancel without asking")] = False,
) -> None:
    """Cancel a job: a queued one at once, a running one at its worker's next heartbeat."""
    settings = settings_or_exit("cancel")
    with convex_or_exit(settings, "cancel") as convex:
        job = job_or_exit(convex, job_id)
        for line in render.describe(job):
            typer.echo(line)
        if job.status in TERMINAL_STATUSES:
            typer.echo(f"job {job_id} already ended ({job.status}): nothing to cancel")
            return
        if not yes:
            typer.echo("re-run with --yes to cancel")
            raise typer.Exit(1)
        try:
            # Safe to retry: canceling twice leaves the job as the first call did.
            reply = convex.cancel(job_id)
        except WorkerError as exc:
            raise convex_failure(exc) from None
    if reply.status == "canceled":
        typer.echo(f"job {job_id} canceled")  # queued, or assigned and not accepted yet
    elif reply.status in LEASED_STATUSES:
        typer.echo(
            f"job {job_id} is {reply.status}: cancel requested, its worker stops it at the next "
            "heartbeat (check with `fondation-worker status`)"
        )
    else:
        typer.echo(f"job {job_id} is {reply.status}: nothing to cancel")


# --- healthcheck ----------------------------------------------------------------------


COMMANDS = (enqueue, status, stuck, reclaim, requeue, cancel)
