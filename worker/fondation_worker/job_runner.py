"""One job from claim to its last call: workspace, disk, clone, start, steps, upload, complete.

The runner ends every job with exactly one final call that matches how it ended:
``complete``; ``retryOrFail`` with the error kind; ``release`` (shutdown);
``acknowledgeCancel`` (cancel); or nothing at all when the lease was lost (fence).
"""

from __future__ import annotations

import contextlib
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import structlog

from . import watchdog
from .claude_runner import ClaudeRunner, login_source_dir
from .clock import Clock
from .collect import OUTPUT_DIR_NAME, Collected, batch_docs, collect_docs
from .config import Settings
from .convex_client import QueueApi
from .credentials import login_secrets
from .errors import (
    ConvexUnavailable,
    ErrorKind,
    GiveUp,
    InvalidState,
    JobAborted,
    JobFailed,
    LeaseLost,
    OperatorActionNeeded,
    WorkerError,
)
from .git_clone import CloneOptions, clone
from .lease import LeaseFile, ProgressBox
from .logging_setup import get_logger
from .metrics import Metrics
from .models import ClaimedJob, Doc, Dropped, Offer, Progress, Redaction, Summary
from .pause import claude_pause
from .pipeline import STEPS, Step, render_prompt
from .process import AbortSignal, ProcessRunner
from .redact import Redactor
from .scrub import PathScrubber, drop_tracebacks, machine_places
from .units import MS_PER_S, seconds
from .validate import ValidationError, validate_branch, validate_repo_url
from .workspace import Workspace, create_workspace, disk_status, remove_tree

log = get_logger(__name__)

Outcome = Literal[
    "completed", "deferred", "failed", "dead", "canceled", "released", "fenced", "lost"
]

DISK_RETRY_MS = 5 * 60 * 1000
LEASE_FILE_NAME = watchdog.LEASE_FILE_NAME
MAX_ERROR_CHARS = 1000
_CLASS_TO_KIND: dict[str, ErrorKind] = {
    "auth": "auth",
    "usage_limit": "usage_limit",
    "transient": "transient",
    "permanent": "permanent",
}


@dataclass(frozen=True)
class JobOutcome:
    outcome: Outcome
    kind: ErrorKind | None = None
    message: str = ""
    retry_after_ms: int | None = None
    docs: int = 0
    # The final call offered the job's slot for the next dispatch (it went through).
    offered: bool = False


def _no_offer(kind: ErrorKind | None) -> Offer | None:
    del kind
    return None


@dataclass
class JobContext:
    """What the scheduler shares with a running job."""

    abort: AbortSignal
    progress: ProgressBox
    stop_heartbeat: Callable[[], None]
    # Where the lease deadline is kept for the lease watchdog (lease.LeaseFile, watchdog.py).
    lease_file: LeaseFile | None = None
    # The slot the final call offers back (None: none), given the error kind it reports.
    offer: Callable[[ErrorKind | None], Offer | None] = _no_offer


@dataclass
class Attempt:
    """One attempt at one job: what every stage of it reads (River's JobExecutor holds the
    same). The runner is shared by every job of the worker; an attempt is not."""

    job: ClaimedJob
    ctx: JobContext
    # The job's GitHub token (None: a public repository), registered with the redactor.
    token: str | None
    started: float  # on the runner's monotonic clock
    # Created for this attempt; removed after its final call, in the background.
    workspaces: list[Workspace] = field(default_factory=list)

    def check(self) -> None:
        """Stop here when the job was told to stop (cancel, shutdown, fence, timeout)."""
        if self.ctx.abort.reason is not None:
            raise JobAborted(self.ctx.abort.reason)


class JobRunner:
    def __init__(
        self,
        settings: Settings,
        queue: QueueApi,
        processes: ProcessRunner,
        clock: Clock,
        redactor: Redactor,
        metrics: Metrics,
        base_env: Mapping[str, str],
        claude: ClaudeRunner,
        steps: Sequence[Step] = STEPS,
    ) -> None:
        self._settings = settings
        self._queue = queue
        self._processes = processes
        self._clock = clock
        self._redactor = redactor
        self._metrics = metrics
        self._base_env = dict(base_env)
        self._steps = tuple(steps)
        # The worker's one Claude runner (assembly.py), shared with the auth probe.
        self._claude = claude
        # What users see (errors, documents) names no directory of this machine.
        self._paths = PathScrubber(
            machine_places(
                temp_dir=settings.temp_dir,
                config_dir=settings.claude_config_dir,
                credentials_source=settings.claude_credentials_source,
                env=self._base_env,
                claude_bin=settings.claude_bin,
            )
        )
        # Workspaces being removed in the background (Workspace.discard): a clean exit
        # waits for them, so a drained worker leaves no .trash- directory behind.
        self._removals: list[threading.Thread] = []

    def run(self, job: ClaimedJob, ctx: JobContext) -> JobOutcome:
        token = job.github_token.get_secret_value() if job.github_token else None
        attempt = Attempt(job, ctx, token, started=self._clock.monotonic())
        self._redactor.register(token)
        self._redactor.register(job.lease_token.get_secret_value())
        try:
            with structlog.contextvars.bound_contextvars(job_id=job.job_id, attempt=job.attempt):
                return self._run(attempt)
        finally:
            self._redactor.unregister(token)
            self._redactor.unregister(job.lease_token.get_secret_value())

    def wait_for_removals(self, timeout_s: float) -> bool:
        """At exit: wait up to ``timeout_s`` for background workspace removals; True when
        none is left (one still running is finished by the next start's sweep)."""
        # Real time: joining a thread waits on the real clock whatever clock the runner has.
        deadline = time.monotonic() + timeout_s
        for thread in self._removals:
            thread.join(timeout=max(0.0, deadline - time.monotonic()))
        left = [t.name for t in self._removals if t.is_alive()]
        if left:
            log.warning("workspace.removal_unfinished", workspaces=len(left))
        return not left

    # --- the work -------------------------------------------------------------------

    def _run(self, attempt: Attempt) -> JobOutcome:
        job = attempt.job
        log.info(
            "job.started",
            repo=job.repo_url,
            branch=job.branch,
            max_attempts=job.max_attempts,
            private=attempt.token is not None,
        )
        # The workspace outlives _execute: it is removed after the final call, in the
        # background, so the job's end is reported without waiting for the removal.
        try:
            return self._attempt(attempt)
        finally:
            for workspace in attempt.workspaces:
                removal = workspace.discard()
                if removal is not None:
                    self._removals = [t for t in self._removals if t.is_alive()] + [removal]

    def _attempt(self, attempt: Attempt) -> JobOutcome:
        ctx = attempt.ctx
        try:
            docs = self._execute(attempt)
        except JobAborted as aborted:
            return self._finish_aborted(attempt, aborted.reason)
        except JobFailed as failed:
            if ctx.abort.reason == "fence":
                return self._finish_aborted(attempt, "fence")
            return self._finish_failed(attempt, failed)
        except LeaseLost as exc:
            ctx.stop_heartbeat()
            log.error("job.lease_lost", problem=str(exc))
            return JobOutcome("fenced", message=str(exc))
        except (ConvexUnavailable, OperatorActionNeeded) as exc:
            if ctx.abort.reason == "fence":
                return self._finish_aborted(attempt, "fence")
            ctx.stop_heartbeat()
            # We cannot report anything now; the lease will run out and the job comes back.
            log.error("job.abandoned", problem=str(exc))
            return JobOutcome("lost", message=str(exc))
        except WorkerError as exc:
            return self._finish_failed(attempt, JobFailed("transient", f"worker error: {exc}"))
        except Exception as exc:
            log.exception("job.internal_error")
            internal = JobFailed("transient", f"internal worker error: {type(exc).__name__}")
            return self._finish_failed(attempt, internal)
        return self._finish_completed(attempt, docs)

    def _execute(self, attempt: Attempt) -> _Done:
        job, ctx = attempt.job, attempt.ctx
        settings = self._settings
        try:
            repo = validate_repo_url(job.repo_url, settings.allowed_repo_hosts)
            branch = validate_branch(job.branch) if job.branch else None
        except ValidationError as exc:
            raise JobFailed("invalid_repository", str(exc)) from None
        total = len(self._steps)
        attempt.check()
        workspace = create_workspace(settings.jobs_dir, job.job_id)
        attempt.workspaces.append(workspace)
        if ctx.lease_file is not None:
            ctx.lease_file.attach(workspace.root / LEASE_FILE_NAME)
        disk = disk_status(settings.temp_dir, settings.min_free_disk_mb)
        if not disk.ok:
            raise JobFailed(
                "disk", f"not enough free disk in TEMP_DIR: {disk.describe()}", DISK_RETRY_MS
            )
        ctx.progress.set(
            Progress(step="clone", current_step=0, total_steps=total, message="Cloning")
        )
        clone(
            url=repo.url,
            branch=branch,
            token=attempt.token,
            workspace=workspace,
            options=CloneOptions(
                git_bin=settings.git_bin,
                timeout_s=seconds(settings.clone_timeout_ms),
                max_bytes=settings.max_repo_mb * 1024 * 1024,
                ca_bundle=settings.git_ca_bundle,
            ),
            runner=self._processes,
            abort=ctx.abort,
            base_env=self._base_env,
        )
        log.info("job.cloned")
        output_dir = workspace.repo / OUTPUT_DIR_NAME
        remove_tree(output_dir)  # whatever the repository shipped there is not ours
        attempt.check()
        # No jobs:start call: the scheduler claims with start=True (running from the claim).

        cost = 0.0
        for index, step in enumerate(self._steps, start=1):
            attempt.check()
            ctx.progress.set(
                Progress(
                    step=step.name,
                    current_step=index,
                    total_steps=total,
                    message=f"{step.title} (step {index} of {total})",
                )
            )
            log.info("step.started", step=step.name, index=index, total=total)
            cost += self._run_step(attempt, repo.slug, workspace, step, index)

        attempt.check()
        collected = self._collect(output_dir, workspace.root)
        for rejection in collected.rejected:
            log.warning("docs.rejected", path=rejection.path, reason=rejection.reason)
            self._metrics.docs_dropped.labels(reason=rejection.code).inc()
        dropped = collected.dropped()
        if not collected.docs:
            raise JobFailed("permanent", "the analysis produced no documents")
        docs, redactions = collected.docs, collected.redactions
        run_id = str(uuid.uuid4())
        batches = batch_docs(docs)
        ctx.progress.set(
            Progress(
                step="upload",
                current_step=total,
                total_steps=total,
                message=f"Uploading {len(collected.docs)} documents",
            )
        )
        # Every batch but the last now; the last rides with jobs:complete (one call fewer).
        for batch in batches[:-1]:
            attempt.check()
            self._queue.upload_docs(job.job_id, job.lease_token, run_id, batch)
        log.info("docs.uploaded", docs=len(collected.docs), batches=len(batches) - 1)
        attempt.check()
        duration_ms = (self._clock.monotonic() - attempt.started) * MS_PER_S
        return _Done(
            run_id,
            len(collected.docs),
            duration_ms,
            cost,
            tuple(batches[-1]),
            tuple(redactions),
            dropped,
        )

    def _collect(self, output_dir: Path, workspace: Path) -> Collected:
        """The docs, scrubbed before anything is derived from them (collect.py).

        The model read an untrusted repository: an injected instruction could make it copy a
        secret into a document or a file name. Every secret the worker holds, in any of the
        disguises redact.py knows, and token shapes are masked in names and contents first;
        machine paths become placeholders. What was masked is recorded on the job (which doc,
        how many), in the metrics and in the logs, never the secret itself.
        """
        paths = self._paths.with_place(workspace, "<workspace>")

        def scrub(text: str) -> tuple[str, int]:
            masked, hits = self._redactor.redact_counted(text)
            return paths.scrub(masked), hits

        with self._login_secrets():
            collected = collect_docs(output_dir, scrub=scrub)
        for redaction in collected.redactions:
            self._metrics.doc_redactions.inc(redaction.count)
            log.warning("docs.redacted", slug=redaction.slug, count=redaction.count)
        return collected

    def _run_step(
        self, attempt: Attempt, repo_slug: str, workspace: Workspace, step: Step, index: int
    ) -> float:
        job, repo_dir = attempt.job, workspace.repo
        prompt = render_prompt(
            step,
            repo_name=repo_slug,
            branch=job.branch or "(default)",
            index=index,
            total=len(self._steps),
        )
        result = self._claude.run(
            prompt,
            cwd=repo_dir,
            scratch=workspace.root,
            abort=attempt.ctx.abort,
            timeout_s=seconds(self._settings.step_timeout_ms),
            job_id=job.job_id,
            step=step.name,
        )
        verdict = result.classification
        if result.aborted:
            raise JobAborted(result.aborted)
        self._metrics.claude_steps.labels(step=step.name, outcome=verdict.kind).inc()
        log.info(
            "step.finished",
            step=step.name,
            outcome=verdict.kind,
            seconds=round(result.duration_s, 1),
            cost_usd=result.cost_usd,
        )
        if verdict.timed_out:
            raise JobFailed(
                "timeout", f"step {step.name} took longer than STEP_TIMEOUT_MS: {verdict.reason}"
            )
        if not verdict.ok:
            kind = _CLASS_TO_KIND[verdict.kind]
            raise JobFailed(kind, f"step {step.name}: {verdict.reason}", verdict.retry_after_ms)
        missing = [p for p in step.expects if not any((repo_dir / OUTPUT_DIR_NAME).glob(p))]
        if missing:
            raise JobFailed("transient", f"step {step.name} did not write {', '.join(missing)}")
        return result.cost_usd

    # --- the one final call -----------------------------------------------------------

    def _finish_completed(self, attempt: Attempt, done: _Done) -> JobOutcome:
        job, ctx = attempt.job, attempt.ctx
        ctx.stop_heartbeat()
        if ctx.abort.reason == "fence":
            return self._finish_aborted(attempt, "fence")
        summary = Summary(
            docs_count=done.docs,
            duration_ms=round(done.duration_ms),
            cost_usd=done.cost_usd,
            redactions=list(done.redactions) or None,
            # recorded on the job so its user sees what was left out, not only the worker log
            dropped=done.dropped if done.dropped is not None and done.dropped.count else None,
        )
        offer = ctx.offer(None)
        try:
            self._queue.complete(
                job.job_id, job.lease_token, done.run_id, summary, done.last_batch, offer
            )
        except (InvalidState, LeaseLost) as exc:
            if exc.after_retry and self._already(job, "completed"):
                log.info("job.completed", docs=done.docs, note="confirmed after a retry")
                return JobOutcome("completed", docs=done.docs)
            log.error("job.complete_refused", problem=str(exc))
            return JobOutcome("fenced", message=str(exc))
        except WorkerError as exc:
            log.error("job.complete_failed", problem=str(exc))
            return JobOutcome("lost", message=str(exc))
        log.info(
            "job.completed",
            docs=done.docs,
            duration_ms=round(done.duration_ms),
            cost_usd=round(done.cost_usd, 4),
        )
        return JobOutcome("completed", docs=done.docs, offered=offer is not None)

    def _finish_failed(self, attempt: Attempt, failed: JobFailed) -> JobOutcome:
        job, ctx = attempt.job, attempt.ctx
        ctx.stop_heartbeat()
        if ctx.abort.reason == "fence":
            return self._finish_aborted(attempt, "fence")
        message = self._user_facing(failed.message)
        pause = claude_pause(failed.kind, failed.retry_after_ms, self._settings.auth_recheck_ms)
        retry_after = failed.retry_after_ms if pause is None else pause.defer_ms
        offer = ctx.offer(failed.kind)
        try:
            reply = self._queue.retry_or_fail(
                job.job_id, job.lease_token, message, failed.kind, retry_after, offer
            )
        except LeaseLost as exc:
            log.error("job.retry_refused", problem=str(exc), kind=failed.kind)
            return JobOutcome("fenced", failed.kind, message)
        except (GiveUp, WorkerError) as exc:
            log.error("job.retry_failed", problem=str(exc), kind=failed.kind)
            return JobOutcome("lost", failed.kind, message)
        outcome: Outcome = "deferred" if reply.status == "pending" else reply.status
        log.warning(
            "job.failed",
            kind=failed.kind,
            error=message,
            status=reply.status,
            run_at=reply.run_at,
        )
        return JobOutcome(outcome, failed.kind, message, retry_after, offered=offer is not None)

    def _finish_aborted(self, attempt: Attempt, reason: str) -> JobOutcome:
        job, ctx = attempt.job, attempt.ctx
        ctx.stop_heartbeat()
        if reason == "fence":
            # Another worker may own the job now: not one more call for it.
            log.warning("job.fenced")
            return JobOutcome("fenced", message="lease could not be renewed")
        if reason == "timeout":
            return self._finish_failed(
                attempt,
                JobFailed(
                    "timeout", f"job took longer than JOB_TIMEOUT_MS ({self._job_timeout_s()} s)"
                ),
            )
        try:
            if reason == "cancel":
                offer = ctx.offer(None)
                self._queue.acknowledge_cancel(job.job_id, job.lease_token, offer)
                log.info("job.canceled")
                return JobOutcome("canceled", offered=offer is not None)
            self._queue.release(job.job_id, job.lease_token, "shutdown")
            log.info("job.released", reason="shutdown")
            return JobOutcome("released", "shutdown")
        except LeaseLost as exc:
            log.error("job.final_call_refused", problem=str(exc), reason=reason)
            return JobOutcome("fenced", message=str(exc))
        except WorkerError as exc:
            log.error("job.final_call_failed", problem=str(exc), reason=reason)
            return JobOutcome("lost", message=str(exc))

    @contextlib.contextmanager
    def _login_secrets(self) -> Iterator[None]:
        """The CLI's login tokens, masked too while they are registered. Read at use time:
        the CLI rewrites its login file when it refreshes the access token."""
        login = login_secrets(login_source_dir(self._settings, self._base_env))
        for secret in login:
            self._redactor.register(secret)
        try:
            yield
        finally:
            for secret in login:
                self._redactor.unregister(secret)

    def _user_facing(self, message: str) -> str:
        """Errors are shown to the job's user: no traceback, no directory of this machine,
        no secret."""
        text = self._paths.scrub(drop_tracebacks(message))
        with self._login_secrets():
            return self._redactor.redact(text)[:MAX_ERROR_CHARS]

    def _job_timeout_s(self) -> int:
        return int(seconds(self._settings.job_timeout_ms))

    def _already(self, job: ClaimedJob, status: str) -> bool:
        try:
            public = self._queue.get_job(job.job_id, job.lease_token)
        except WorkerError:
            return False
        return public is not None and public.status == status


@dataclass(frozen=True)
class _Done:
    run_id: str
    docs: int
    duration_ms: float
    cost_usd: float
    last_batch: tuple[Doc, ...] = ()
    redactions: tuple[Redaction, ...] = ()
    dropped: Dropped | None = None
