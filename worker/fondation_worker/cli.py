"""``fondation-worker``: run, check, enqueue, status, stuck, reclaim, requeue, cancel,
healthcheck.

Configuration problems print one line each to stderr and exit 2, never a traceback.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from types import FrameType
from typing import Annotated, Any

import typer
from pydantic import SecretStr

from . import __version__, watchdog
from .classify import Classification
from .claude_runner import ClaudeRunner
from .clock import SystemClock
from .config import Settings, load_settings
from .convex_client import ConvexClient
from .credentials import StagedCredentials, stage_credentials
from .errors import (
    ConfigError,
    ConvexCodedError,
    InvalidState,
    NotFound,
    OperatorActionNeeded,
    WorkerError,
)
from .health import HealthServer, HealthState
from .job_runner import JobRunner
from .logging_setup import configure_logging, get_logger
from .metrics import Metrics
from .models import TERMINAL_STATUSES, PublicJob, StuckJob
from .process import SubprocessRunner
from .redact import Redactor
from .sandbox import landlock_abi
from .scheduler import Scheduler
from .wakeup import WakeupSubscription
from .workspace import disk_status, remove_tree, sweep

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="Runs Fondation's Claude analysis jobs from a Convex queue.",
)

EXIT_CONFIG = 2
MIN_GIT = (2, 32)  # GIT_CONFIG_GLOBAL
# At exit, how long the worker waits for workspaces still being removed in the background
# (a left-over one is finished by the next start's sweep).
WORKSPACE_REMOVAL_WAIT_S = 5.0

log = get_logger(__name__)


def _fail_config(problems: list[str]) -> typer.Exit:
    for problem in problems:
        typer.echo(f"fondation-worker: config error: {problem}", err=True)
    return typer.Exit(EXIT_CONFIG)


def _settings(*, quiet_logs: bool = True) -> Settings:
    try:
        settings = load_settings()
    except ConfigError as exc:
        raise _fail_config(exc.problems) from None
    if quiet_logs:
        # Operator commands print their own output; log lines only for warnings, on stderr.
        configure_logging(
            Redactor(settings.secret_values()),
            log_format="console",
            level="warning",
            stream=sys.stderr,
        )
    return settings


def _which(program: str) -> str | None:
    if "/" in program:
        return program if os.access(program, os.X_OK) and Path(program).is_file() else None
    return shutil.which(program)


def _ensure_writable_dir(path: Path) -> str | None:
    try:
        path.mkdir(parents=True, exist_ok=True, mode=0o700)
    except OSError as exc:
        return f"cannot create {path}: {exc.strerror}"
    probe = path / f".write-test-{uuid.uuid4().hex}"
    try:
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        return f"{path} is not writable: {exc.strerror}"
    return None


def _runtime_problems(settings: Settings) -> list[str]:
    problems: list[str] = []
    if _which(settings.claude_bin) is None:
        problems.append(f"CLAUDE_BIN: {settings.claude_bin!r} not found or not executable")
    if _which(settings.git_bin) is None:
        problems.append(f"GIT_BIN: {settings.git_bin!r} not found or not executable")
    problem = _ensure_writable_dir(settings.temp_dir)
    if problem:
        problems.append(f"TEMP_DIR: {problem}")
    if settings.claude_config_dir is not None:
        problem = _ensure_writable_dir(settings.claude_config_dir)
        if problem:
            problems.append(
                f"CLAUDE_CONFIG_DIR: {problem} (the Claude CLI writes there during every run)"
            )
    if settings.log_file is not None:
        problem = _ensure_writable_dir(settings.log_file.parent)
        if problem:
            problems.append(f"LOG_FILE: {problem}")
    if settings.claude_sandbox == "landlock" and landlock_abi() < 1:
        # Never run the CLI unconfined when the operator asked for the sandbox.
        problems.append("CLAUDE_SANDBOX=landlock: this kernel has no Landlock (Linux >= 5.13)")
    return problems


def _stage_credentials(settings: Settings) -> StagedCredentials | None:
    """Copy a read-only mounted login into the writable CLAUDE_CONFIG_DIR (if configured)."""
    if settings.claude_credentials_source is None or settings.claude_config_dir is None:
        return None
    return stage_credentials(settings.claude_credentials_source, settings.claude_config_dir)


MISSING_OPERATOR_CREDENTIAL = (
    "OPERATOR_TOKEN: is required by the operator commands (enqueue, stuck, reclaim, requeue, "
    "cancel): set it to the Convex deployment's OPERATOR_TOKEN; the worker token has no "
    "operator rights"
)


def _convex(
    settings: Settings, metrics: Metrics | None = None, *, operator: bool = False
) -> ConvexClient:
    """A Convex client with the worker token, or with OPERATOR_TOKEN for ``operator=True``.

    The operator functions accept only the operator token (fail-closed in Convex): an
    operator command without OPERATOR_TOKEN is a config error here (exit 2), never a call
    with the worker token.
    """
    token = settings.worker_token
    if operator:
        if settings.operator_token is None:
            raise _fail_config([MISSING_OPERATOR_CREDENTIAL])
        token = settings.operator_token
    return ConvexClient(
        settings.convex_url,
        token,
        timeout_s=settings.convex_timeout_ms / 1000,
        metrics=metrics,
    )


def _probe(runner: ClaudeRunner, settings: Settings, timeout_s: float) -> Classification:
    """A tiny real Claude call in a scratch directory that is removed afterwards."""
    root = settings.temp_dir / f"probe-{uuid.uuid4().hex}"
    root.mkdir(parents=True, exist_ok=True, mode=0o700)
    try:
        return runner.probe(root, timeout_s)
    finally:
        remove_tree(root)


# --- run ------------------------------------------------------------------------------


@app.command()
def run() -> None:
    """Claim and run jobs until SIGTERM/SIGINT (a second signal releases jobs at once)."""
    settings = _settings(quiet_logs=False)
    problems = _runtime_problems(settings)
    if problems:
        raise _fail_config(problems)
    redactor = Redactor(settings.secret_values())
    configure_logging(
        redactor,
        log_format=settings.log_format,
        log_file=settings.log_file,
        level=settings.log_level,
    )
    try:
        staged = _stage_credentials(settings)
    except OSError as exc:
        typer.echo(f"fondation-worker: cannot stage Claude credentials: {exc}", err=True)
        raise typer.Exit(EXIT_CONFIG) from None
    if staged is not None:
        log.info(
            "claude.credentials_staged",
            source=str(staged.source),
            copied=list(staged.copied),
            skipped=list(staged.skipped),
            login=staged.has_login,
        )
    clock = SystemClock()
    metrics = Metrics()
    health = HealthState(clock, metrics, worker_id=settings.worker_id)
    host, port = settings.health_address
    try:
        server = HealthServer(host, port, health, metrics)
    except OSError as exc:
        typer.echo(f"fondation-worker: cannot listen on HEALTH_BIND {host}:{port}: {exc}", err=True)
        raise typer.Exit(1) from None
    server.start()
    lease_watchdog = _start_watchdog(settings)
    processes = SubprocessRunner()
    base_env = dict(os.environ)
    convex = _convex(settings, metrics)
    claude = ClaudeRunner(settings, processes, clock, base_env)
    runner = JobRunner(settings, convex, processes, clock, redactor, metrics, base_env)
    scheduler = Scheduler(
        settings=settings,
        queue_api=convex,
        runner=runner,
        clock=clock,
        health=health,
        metrics=metrics,
        disk=lambda: disk_status(settings.temp_dir, settings.min_free_disk_mb),
        sweep=lambda: _sweep(settings),
        recover=lambda: _recover(convex, settings.worker_id),
        probe=lambda: _probe(claude, settings, 60.0),
        wakeup=(
            WakeupSubscription(settings.convex_url, settings.worker_token, metrics)
            if settings.wakeup
            else None
        ),
    )

    def on_signal(signum: int, frame: FrameType | None) -> None:
        del frame
        scheduler.request_stop()
        # Logging from a signal handler can deadlock on the handler's lock; the loop logs.
        os.write(2, f"fondation-worker: received signal {signum}\n".encode())

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    code = 1
    try:
        code = scheduler.run()
        runner.wait_for_removals(WORKSPACE_REMOVAL_WAIT_S)
    finally:
        server.stop()
        convex.close()
        # It notices our exit by itself; reap it if it already went (no zombie while we end).
        lease_watchdog.poll()
    raise typer.Exit(code)


def _recover(convex: ConvexClient, worker_id: str) -> None:
    counts = convex.recover_worker(worker_id)
    if counts.total:
        log.warning(
            "worker.recovered_jobs",
            worker_id=worker_id,
            pending=counts.moved,
            dead=counts.dead,
            canceled=counts.canceled,
        )


def _stop_leftovers(workspace: Path) -> None:
    # A predecessor's Claude runs still working there: its jobs are given back next.
    killed = watchdog.kill_under(watchdog.roots_of(str(workspace)), {os.getpid()})
    if killed:
        log.warning("workspace.leftover_processes_killed", workspace=workspace.name, pids=killed)


def _start_watchdog(settings: Settings) -> subprocess.Popen[bytes]:
    """The lease watchdog (watchdog.py), in its own session so it outlives us long enough
    to stop our jobs' processes; it exits within 0.5 s of this process, so no timeout."""
    settings.jobs_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    return subprocess.Popen(  # noqa: S603 - fixed argument list
        [
            sys.executable,
            "-I",
            "-S",
            str(Path(watchdog.__file__)),
            str(settings.jobs_dir),
            str(os.getpid()),
        ],
        stdin=subprocess.DEVNULL,
        start_new_session=True,
        close_fds=True,
    )


def _sweep(settings: Settings) -> list[Path]:
    removed = sweep(settings.jobs_dir, before_remove=_stop_leftovers)
    # Scratch dirs of auth probes cut short by a crash (no lock: only this worker uses them).
    for leftover in settings.temp_dir.glob("probe-*"):
        remove_tree(leftover)
        removed.append(leftover)
    if removed:
        log.info("workspace.swept", removed=[p.name for p in removed])
    return removed


# --- check ----------------------------------------------------------------------------


class _Report:
    def __init__(self) -> None:
        self.failed = False

    def ok(self, name: str, message: str) -> None:
        typer.echo(f"ok    {name}: {message}")

    def fail(self, name: str, message: str) -> None:
        self.failed = True
        typer.echo(f"FAIL  {name}: {message}")

    def warn(self, name: str, message: str) -> None:
        typer.echo(f"warn  {name}: {message}")


def _claude_verdict(result: Classification) -> tuple[bool, str]:
    if result.ok:
        return True, "a tiny real call succeeded"
    text = result.reason
    if result.kind == "auth":
        lowered = text.lower()
        if "not logged in" in lowered or "/login" in lowered:
            return False, (
                "Claude is not logged in. Set CLAUDE_CODE_OAUTH_TOKEN (from `claude setup-token`) "
                "or ANTHROPIC_API_KEY, or log in with CLAUDE_CONFIG_DIR pointing at the "
                f"credentials ({text})"
            )
        return False, f"Claude authentication failed: {text}"
    if result.kind == "usage_limit":
        return False, f"Claude usage limit reached: {text}"
    return False, f"Claude call failed ({result.kind}): {text}"


@app.command()
def check(
    claude_timeout: Annotated[float, typer.Option(help="Seconds for the Claude call")] = 60.0,
) -> None:
    """Check config, Convex, Claude auth (a tiny real call), disk and git; non-zero on failure."""
    settings = _settings()
    problems = _runtime_problems(settings)
    if problems:
        # The same configuration would stop `run`: say so the same way.
        raise _fail_config(problems)
    report = _Report()
    report.ok("config", f"valid (worker {settings.worker_id}, Convex {settings.convex_url})")

    with _convex(settings) as convex:
        try:
            queue = convex.queue_metrics()
        except OperatorActionNeeded:
            report.fail("convex", "reachable, but the worker token was refused (UNAUTHORIZED)")
        except WorkerError as exc:
            report.fail("convex", f"not reachable: {exc}")
        else:
            counts = queue.get("counts", {})
            report.ok("convex", f"reachable, token accepted (queue counts: {counts})")

    problem = _ensure_writable_dir(settings.temp_dir)
    if problem:
        report.fail("disk", problem)
    else:
        disk = disk_status(settings.temp_dir, settings.min_free_disk_mb)
        (report.ok if disk.ok else report.fail)("disk", f"{settings.temp_dir}: {disk.describe()}")

    git = _which(settings.git_bin)
    if git is None:
        report.fail("git", f"{settings.git_bin!r} not found")
    else:
        try:
            out = subprocess.run(  # noqa: S603 - argument list
                [git, "--version"], capture_output=True, text=True, timeout=20, check=False
            ).stdout.strip()
        except (OSError, subprocess.TimeoutExpired) as exc:
            report.fail("git", f"cannot run {git}: {exc}")
        else:
            version = _git_version(out)
            if version is None or version < MIN_GIT:
                report.fail("git", f"{out or 'unknown version'}; need git >= 2.32")
            else:
                report.ok("git", out)

    claude_bin = _which(settings.claude_bin)
    if claude_bin is None:
        report.fail("claude", f"{settings.claude_bin!r} not found on PATH")
    else:
        if settings.claude_config_dir is not None:
            problem = _ensure_writable_dir(settings.claude_config_dir)
            if problem:
                report.fail("claude", f"CLAUDE_CONFIG_DIR: {problem}")
        try:
            staged = _stage_credentials(settings)
        except OSError as exc:
            report.fail("credentials", f"cannot copy the mounted login: {exc}")
        else:
            if staged is not None:
                what = "a login" if staged.has_login else "no .credentials.json"
                report.ok("credentials", f"{staged.source}: {what}, copied {list(staged.copied)}")
        runner = ClaudeRunner(settings, SubprocessRunner(), SystemClock(), dict(os.environ))
        good, message = _claude_verdict(_probe(runner, settings, claude_timeout))
        (report.ok if good else report.fail)("claude", message)

    raise typer.Exit(1 if report.failed else 0)


def _git_version(text: str) -> tuple[int, int] | None:
    parts = text.replace("git version", "").strip().split(".")
    try:
        return int(parts[0]), int(parts[1])
    except (IndexError, ValueError):
        return None


# --- enqueue --------------------------------------------------------------------------


def _progress_line(job: PublicJob) -> str:
    parts = [f"[{job.status}]"]
    progress = job.progress
    if progress is not None:
        if progress.current_step is not None and progress.total_steps:
            parts.append(f"step {progress.current_step} of {progress.total_steps}")
        if progress.message:
            parts.append(progress.message)
    if job.attempts is not None and job.max_attempts:
        parts.append(f"(attempt {job.attempts}/{job.max_attempts})")
    if job.status in ("pending", "failed") and job.last_error:
        parts.append(f"last error: {job.last_error[:120]}")
    return " ".join(parts)


@app.command()
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
) -> None:
    """Queue a repository (operator, OPERATOR_TOKEN); --wait exits with the job's outcome."""
    settings = _settings()
    token: SecretStr | None = None
    if github_token_env:
        raw = os.environ.get(github_token_env)
        if not raw:
            typer.echo(f"fondation-worker: {github_token_env} is not set", err=True)
            raise typer.Exit(EXIT_CONFIG)
        token = SecretStr(raw)
    with _convex(settings, operator=True) as convex:
        try:
            reply = convex.enqueue(
                repo,
                branch,
                github_token=token,
                max_attempts=max_attempts,
                user_id=user_id,
                dedupe_key=dedupe_key,
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
        raise typer.Exit(_follow(convex, reply.job_id, poll))


def _dropped_note(job: PublicJob) -> str:
    dropped = job.result.dropped if job.result else None
    if dropped is None or dropped.count == 0:
        return ""
    reasons = ", ".join(f"{r.reason} {r.count}" for r in dropped.reasons)
    return f" ({dropped.count} generated file(s) left out: {reasons})"


def _follow(convex: ConvexClient, job_id: str, poll_s: float) -> int:
    tty = sys.stdout.isatty()
    last = ""
    while True:
        try:
            job = convex.get_job(job_id)
        except WorkerError as exc:
            typer.echo(f"\nfondation-worker: cannot read the job: {exc}", err=True)
            time.sleep(poll_s)
            continue
        if job is None:
            typer.echo(f"\nfondation-worker: job {job_id} not found", err=True)
            return 1
        line = _progress_line(job)
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
                typer.echo(f"job {job_id} completed: {docs} documents{_dropped_note(job)}")
                return 0
            detail = f" ({job.last_error_kind}: {job.last_error})" if job.last_error else ""
            typer.echo(f"job {job_id} {job.status}{detail}")
            return 3 if job.status == "canceled" else 1
        time.sleep(poll_s)


# --- status ---------------------------------------------------------------------------

_STATUS_COUNTS = ("pending", "claimed", "running", "completed", "failed", "dead", "canceled")
# (label, key in metrics:queue) of the queue's other figures; ages are in ms.
_STATUS_QUEUE = (
    ("ready", "ready"),
    ("scheduled", "scheduled"),
    ("in progress", "inProgress"),
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
        return _duration(value)
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
    queue += [[name, _figure(counts.get(name), "count")] for name in _STATUS_COUNTS]
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


@app.command()
def status(
    as_json: Annotated[bool, typer.Option("--json", help="Print the raw metrics as JSON")] = False,
) -> None:
    """Queue metrics (metrics:queue) as a table, or JSON for scripts."""
    settings = _settings()
    # Counts only: readable with either token, so the operator's when set, else the worker's.
    with _convex(settings, operator=settings.operator_token is not None) as convex:
        try:
            metrics = convex.queue_metrics()
        except WorkerError as exc:
            typer.echo(f"fondation-worker: {exc}", err=True)
            raise typer.Exit(1) from None
    if as_json:
        typer.echo(json.dumps(metrics, indent=2, sort_keys=True))
        return
    for line in render_status(metrics):
        typer.echo(line)


# --- stuck jobs (docs/RUNBOOK.md, playbooks/runbook-stuck-jobs.yml) ----------------------


def _duration(ms: float) -> str:
    """12s, 4m 05s, 2h 03m, 3d 04h."""
    seconds = max(0, int(ms // 1000))
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


def _stuck_since(job: StuckJob, now_ms: float) -> str:
    if job.why == "lease_expired" and job.lease_expires_at is not None:
        return f"lease expired {_duration(now_ms - job.lease_expires_at)} ago"
    if job.started_at is not None:
        return f"running for {_duration(now_ms - job.started_at)}"
    return "-"


def _table(rows: list[list[str]]) -> list[str]:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return [
        "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in rows
    ]


def _convex_failure(exc: WorkerError) -> typer.Exit:
    typer.echo(f"fondation-worker: {exc}", err=True)
    return typer.Exit(1)


@app.command()
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
    settings = _settings()
    threshold = settings.job_timeout_ms if running_longer_than is None else running_longer_than
    with _convex(settings, operator=True) as convex:
        try:
            jobs = convex.list_stuck(threshold)
        except WorkerError as exc:
            raise _convex_failure(exc) from None
    if as_json:
        typer.echo(json.dumps([j.model_dump(by_alias=True, mode="json") for j in jobs], indent=2))
        return
    criteria = f"lease expired, or running longer than {_duration(threshold)}"
    if not jobs:
        typer.echo(f"no stuck jobs ({criteria})")
        return
    now_ms = time.time() * 1000
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
                _stuck_since(job, now_ms),
                repo,
            ]
        )
    typer.echo(f"{len(jobs)} stuck job(s) ({criteria}):")
    for line in _table(rows):
        typer.echo(line)


@app.command()
def reclaim(
    as_json: Annotated[bool, typer.Option("--json", help="Print the reply as JSON")] = False,
) -> None:
    """Run the reclaim cron's pass now: expired leases back to pending, or dead/canceled."""
    settings = _settings()
    with _convex(settings, operator=True) as convex:
        try:
            reply = convex.reclaim_now()
        except WorkerError as exc:
            raise _convex_failure(exc) from None
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


def _job_or_exit(convex: ConvexClient, job_id: str) -> PublicJob:
    """The job an operator command acts on; exit 1 when it does not exist."""
    try:
        job = convex.get_job(job_id)
    except WorkerError as exc:
        raise _convex_failure(exc) from None
    if job is None:
        typer.echo(f"fondation-worker: job {job_id} not found", err=True)
        raise typer.Exit(1)
    return job


def _describe(job: PublicJob) -> list[str]:
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
        ended = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(job.completed_at / 1000))
        lines.append(f"ended     {ended}")
    if job.requeues:
        lines.append(f"requeued  {len(job.requeues)} time(s) before")
    dropped = _dropped_note(job)
    if dropped:
        lines.append(f"dropped  {dropped}")
    return lines


@app.command()
def requeue(
    job_id: Annotated[str, typer.Argument(help="The dead job's id")],
    yes: Annotated[bool, typer.Option("--yes", help="Requeue without asking")] = False,
) -> None:
    """Put a dead job back in the queue (attempts reset, last error kept); needs --yes."""
    settings = _settings()
    with _convex(settings, operator=True) as convex:
        job = _job_or_exit(convex, job_id)
        if job.status != "dead":
            typer.echo(
                f"fondation-worker: job {job_id} is {job.status}: only a dead job can be requeued",
                err=True,
            )
            raise typer.Exit(1)
        for line in _describe(job):
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


@app.command()
def cancel(
    job_id: Annotated[str, typer.Argument(help="The job's id")],
    yes: Annotated[bool, typer.Option("--yes", help="Cancel without asking")] = False,
) -> None:
    """Cancel a job: a queued one at once, a running one at its worker's next heartbeat."""
    settings = _settings()
    with _convex(settings, operator=True) as convex:
        job = _job_or_exit(convex, job_id)
        for line in _describe(job):
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
            raise _convex_failure(exc) from None
    if reply.status == "canceled":
        typer.echo(f"job {job_id} canceled")
    elif reply.status in ("claimed", "running"):
        typer.echo(
            f"job {job_id} is {reply.status}: cancel requested, its worker stops it at the next "
            "heartbeat (check with `fondation-worker status`)"
        )
    else:
        typer.echo(f"job {job_id} is {reply.status}: nothing to cancel")


# --- healthcheck ----------------------------------------------------------------------


@app.command()
def healthcheck(
    timeout: Annotated[float, typer.Option(help="Seconds")] = 3.0,
) -> None:
    """GET /healthz on HEALTH_BIND; exit 0 when healthy (for Docker HEALTHCHECK)."""
    # The console script answers this before loading the CLI (entry.py); same code here.
    from .healthcheck import healthcheck as check

    raise typer.Exit(check(timeout))


@app.command()
def version() -> None:
    """Print the worker's version."""
    typer.echo(__version__)
