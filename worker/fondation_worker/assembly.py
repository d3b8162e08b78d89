"""The composition root: builds a running worker from ``Settings``.

``fondation-worker run`` is ``build_worker(settings, redactor).run()``. Everything the
worker is made of is created here, once: the Convex client, the one Claude runner (shared by
the job runner and the auth/usage-limit probe), the job runner, the scheduler, the health
server and the lease watchdog. The other modules receive what they need as parameters.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

from . import watchdog
from .claude_runner import PROBE_TIMEOUT_S, ClaudeRunner, defense_layers
from .clock import SystemClock
from .config import Settings
from .convex_client import ConvexClient
from .credentials import StagedCredentials, stage_credentials
from .health import HealthServer, HealthState
from .job_runner import JobRunner
from .logging_setup import get_logger
from .metrics import Metrics
from .process import SubprocessRunner
from .redact import Redactor
from .scheduler import Scheduler
from .units import seconds
from .wakeup import WakeupSubscription
from .workspace import disk_bytes, disk_status, sweep_worker_dirs

log = get_logger(__name__)

# At exit, how long the worker waits for workspaces still being removed in the background
# (a left-over one is finished by the next start's sweep).
WORKSPACE_REMOVAL_WAIT_S = 5.0


class StartupError(Exception):
    """The worker cannot start; ``message`` is the line for the operator."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.message = message
        self.exit_code = exit_code


def connect(
    settings: Settings, metrics: Metrics | None = None, *, command: str = "run"
) -> ConvexClient:
    """A Convex client with the token ``command`` uses (config.CREDENTIALS).

    The operator functions accept only the operator token (fail-closed in Convex): an
    operator command without OPERATOR_TOKEN is a ``ConfigError`` here, never a call with
    the worker token.
    """
    return ConvexClient(
        settings.convex_url,
        settings.token_for(command),
        timeout_s=seconds(settings.convex_timeout_ms),
        metrics=metrics,
    )


def stage_login(settings: Settings) -> StagedCredentials | None:
    """Copy a read-only mounted login into the writable CLAUDE_CONFIG_DIR (if configured);
    ``OSError`` when that fails."""
    if settings.claude_credentials_source is None or settings.claude_config_dir is None:
        return None
    return stage_credentials(settings.claude_credentials_source, settings.claude_config_dir)


def start_lease_watchdog(jobs_dir: Path) -> subprocess.Popen[bytes]:
    """The lease watchdog (watchdog.py), in its own session so it outlives us long enough
    to stop our jobs' processes; it exits within 0.5 s of this process, so no timeout."""
    jobs_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    return subprocess.Popen(  # noqa: S603 - fixed argument list
        [
            sys.executable,
            "-I",
            "-S",
            str(Path(watchdog.__file__)),
            str(jobs_dir),
            str(os.getpid()),
        ],
        stdin=subprocess.DEVNULL,
        start_new_session=True,
        close_fds=True,
    )


def recover_jobs(convex: ConvexClient, worker_id: str) -> None:
    """Give back the jobs a previous process with our worker id still holds."""
    counts = convex.recover_worker(worker_id)
    if counts.total:
        log.warning(
            "worker.recovered_jobs",
            worker_id=worker_id,
            pending=counts.moved,
            dead=counts.dead,
            canceled=counts.canceled,
        )


@dataclass
class Worker:
    """A built worker: ``run()`` claims and runs jobs until stopped by signals."""

    scheduler: Scheduler
    runner: JobRunner
    convex: ConvexClient
    health_server: HealthServer
    lease_watchdog: subprocess.Popen[bytes]

    def run(self) -> int:
        """Run until SIGTERM/SIGINT (a second signal releases jobs at once); the exit code."""
        scheduler = self.scheduler

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
            self.runner.wait_for_removals(WORKSPACE_REMOVAL_WAIT_S)
        finally:
            self.health_server.stop()
            self.convex.close()
            # It notices our exit by itself; reap it if it already went (no zombie meanwhile).
            self.lease_watchdog.poll()
        return code


def build_worker(settings: Settings, redactor: Redactor) -> Worker:
    """Stage the Claude login, start the health server and the lease watchdog, and wire the
    scheduler; ``StartupError`` when the worker cannot start."""
    try:
        staged = stage_login(settings)
    except OSError as exc:
        raise StartupError(f"cannot stage Claude credentials: {exc}", exit_code=2) from None
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
    layers = defense_layers(settings)
    log.info("worker.layers", **layers)
    health = HealthState(
        clock,
        metrics,
        worker_id=settings.worker_id,
        claude_cli_version=settings.claude_cli_version,
        layers=layers,
    )
    host, port = settings.health_address
    try:
        server = HealthServer(host, port, health, metrics)
    except OSError as exc:
        raise StartupError(
            f"cannot listen on HEALTH_BIND {host}:{port}: {exc}", exit_code=1
        ) from None
    server.start()
    lease_watchdog = start_lease_watchdog(settings.jobs_dir)
    processes = SubprocessRunner()
    base_env = dict(os.environ)
    convex = connect(settings, metrics)
    claude = ClaudeRunner(settings, processes, clock, base_env)
    runner = JobRunner(settings, convex, processes, clock, redactor, metrics, base_env, claude)
    scheduler = Scheduler(
        settings=settings,
        queue_api=convex,
        runner=runner,
        clock=clock,
        health=health,
        metrics=metrics,
        disk=lambda: disk_status(settings.temp_dir, settings.min_free_disk_mb),
        sweep=lambda: sweep_worker_dirs(settings.jobs_dir, settings.temp_dir),
        recover=lambda: recover_jobs(convex, settings.worker_id),
        probe=lambda: claude.probe_in(settings.temp_dir, PROBE_TIMEOUT_S),
        wakeup=(
            WakeupSubscription(
                settings.convex_url, settings.token_for("run"), settings.worker_id, metrics
            )
            if settings.wakeup
            else None
        ),
    )
    metrics.watch(
        paused=lambda: scheduler.paused,
        disk=lambda: disk_bytes(settings.temp_dir, settings.min_free_disk_mb),
    )
    return Worker(scheduler, runner, convex, server, lease_watchdog)
