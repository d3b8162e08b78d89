"""The chaos run's data: configuration, planned and enqueued jobs, faults, executions.

Pydantic models at every boundary the run writes or reads (report JSON, the shared log of
the fake claude, dev backend dumps). No secret value is ever stored in these models.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal, get_args

from pydantic import BaseModel, ConfigDict, Field

from fondation_worker.contract import TERMINAL_STATUSES

JobKind = Literal[
    "normal",
    "transient",
    "poison",
    "poison_kill",
    "private",
    "cancel_pending",
    "cancel_running",
    "duplicate",
]
FaultKind = Literal["sigkill", "netcut", "pause", "disk", "rolling", "auth"]
FAULT_KINDS: tuple[FaultKind, ...] = get_args(FaultKind)


class RunConfig(BaseModel):
    """Everything that shapes a run; durations in ms like the worker's settings."""

    model_config = ConfigDict(frozen=True)

    jobs: int = Field(200, ge=12)
    workers: int = Field(3, ge=3, le=8)
    duration_s: float = Field(420, ge=60, description="load and fault window")
    seed: int = 1
    out: Path
    image: str = "fondation-worker:latest"
    lease_ms: int = 6_000
    heartbeat_ms: int = 1_000
    reclaim_ms: int = 2_000
    drain_ms: int = 3_000
    auth_recheck_ms: int = 3_000
    poll_ms: int = 300
    idle_poll_max_ms: int = 1_000
    step_min_ms: int = 150
    step_max_ms: int = 700
    slow_step_ms: int = 2_500
    temp_dir_mb: int = 48
    min_free_disk_mb: int = 8
    settle_timeout_s: float = 480
    observe_interval_s: float = 0.5

    @property
    def recovery_bound_s(self) -> float:
        """A job whose holder died is back in the queue within one lease plus the reclaim
        period (the property under test), plus 0.5 s for the reclaim run itself. How late
        the poller saw it is not counted against this: a job is late only if a poll sent
        after the bound still found it stuck (see ``invariants.stuck_until``), whatever
        the load does to the poller."""
        return (self.lease_ms + self.reclaim_ms) / 1000 + 0.5


class PlannedJob(BaseModel):
    index: int
    kind: JobKind
    at_s: float  # enqueue offset from the load start
    repo: str  # fixture repository name (see cluster.REPOS)
    dedupe_key: str
    duplicates: int = 0  # extra enqueues with the same dedupe key
    max_attempts: int = 10


class EnqueueReplyRecord(BaseModel):
    job_id: str
    created: bool
    t: float


class EnqueuedJob(BaseModel):
    plan: PlannedJob
    job_id: str
    enqueued_t: float
    duplicate_replies: list[EnqueueReplyRecord] = Field(default_factory=list)
    cancel_t: float | None = None
    cancel_reply: str | None = None

    @property
    def expected(self) -> str:
        """The final state this job's kind predicts."""
        kind = self.plan.kind
        if kind in ("poison", "poison_kill"):
            return "dead"
        if kind in ("cancel_pending", "cancel_running"):
            # A cancel that found the job already ended leaves it as it was (CONTRACT.md).
            if self.cancel_reply in TERMINAL_STATUSES and self.cancel_reply != "canceled":
                return self.cancel_reply
            return "canceled"
        return "completed"


class FaultEvent(BaseModel):
    kind: FaultKind
    target: str  # a worker name, "backend" or "all"
    start: float
    end: float
    detail: str = ""
    affected: list[str] = Field(default_factory=list)  # job ids
    bound_s: float = 0.0  # recovery bound for the affected jobs, from `start`
    # The holder of an affected job stays up and connected (disk, auth): a lease renewal
    # after `start` shows the job is not stuck. Otherwise only renewals after `end` count.
    holder_alive: bool = False
    spans: list[tuple[str, float, float]] = Field(default_factory=list)  # (lane, start, end)


class Execution(BaseModel):
    """One run of the fake claude (one step of one job), from the shared log."""

    job: str
    worker: str
    host: str
    pid: int
    step: str
    kind: str
    start: float
    end: float
    end_known: bool
    outcome: str


class Observation(BaseModel):
    """A job as the state poller saw it (changes only)."""

    t: float  # when the poll's reply arrived
    # When the previous successful poll was sent: the job was still in its earlier state at
    # some moment after this one (None for a job's first sighting).
    since: float | None = None
    status: str
    locked_by: str | None = None
    generation: int = 0
    lease_until: float | None = None
    attempts: int = 0
    deferrals: int = 0
    last_error_kind: str | None = None


class CheckResult(BaseModel):
    name: str
    ok: bool
    detail: str


class FaultRow(BaseModel):
    fault: str
    injected: int
    affected: int
    recovered: int
    lost: int
    duplicated: int
    worst_recovery_s: float | None
    bound_s: float | None


class SecretHit(BaseModel):
    where: str
    secret: str  # the secret's name, never its value
