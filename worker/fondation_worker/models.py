"""Pydantic models of the wire contract (docs/CONTRACT.md): what Convex sends and receives."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr

from . import contract
from .contract import DocKind, LeasedStatus, ReclaimOutcome, RetryOutcome, StuckReason


class _Reply(BaseModel):
    # Convex may add fields; the worker reads only what the contract promises.
    model_config = ConfigDict(extra="ignore", frozen=True)


class ClaimedJob(_Reply):
    job_id: str = Field(alias="jobId")
    lease_token: SecretStr = Field(alias="leaseToken")
    lease_until: float = Field(alias="leaseUntil")
    attempt: int
    max_attempts: int = Field(alias="maxAttempts")
    repo_url: str = Field(alias="repoUrl")
    branch: str | None = None
    user_id: str | None = Field(default=None, alias="userId")
    github_token: SecretStr | None = Field(default=None, alias="githubToken")
    # The worker's slot the job runs in: what the worker offers back when the job ends.
    slot: int = 0


class SlotView(_Reply):
    """One of this worker's slots as the dispatcher sees it (jobs:assignments)."""

    slot: int
    state: Literal["idle", "assigned"]
    job_id: str | None = Field(default=None, alias="jobId")


class Assignments(_Reply):
    """jobs:assignments: this worker's offered slots, and the jobs assigned to them."""

    slots: tuple[SlotView, ...]


class Offer(BaseModel):
    """A slot the worker offers for dispatch in a final call (what it frees)."""

    model_config = ConfigDict(frozen=True)

    slot: int
    accept_ms: int

    def wire(self) -> dict[str, Any]:
        return {"slot": self.slot, "acceptMs": self.accept_ms}


class WithdrawReply(_Reply):
    withdrawn: int
    returned: int


class HeartbeatReply(_Reply):
    cancel_requested: bool = Field(alias="cancelRequested")
    lease_until: float = Field(alias="leaseUntil")


class UploadReply(_Reply):
    stored: int


class RetryReply(_Reply):
    status: RetryOutcome
    run_at: float | None = Field(default=None, alias="runAt")


class EnqueueReply(_Reply):
    job_id: str = Field(alias="jobId")
    created: bool


class CancelReply(_Reply):
    status: str


class Progress(BaseModel):
    model_config = ConfigDict(frozen=True, populate_by_name=True)

    step: str | None = None
    current_step: int | None = Field(default=None, alias="currentStep")
    total_steps: int | None = Field(default=None, alias="totalSteps")
    message: str | None = None

    def wire(self) -> dict[str, Any]:
        return self.model_dump(by_alias=True, exclude_none=True)


class Redaction(BaseModel):
    """Secrets masked in one generated document before upload (never the secrets)."""

    model_config = ConfigDict(frozen=True)

    slug: str
    count: int = Field(ge=1)


class DropReason(BaseModel):
    model_config = ConfigDict(frozen=True)

    reason: contract.DropReason
    count: int


class Dropped(BaseModel):
    """Generated files left out of the job's documents (CONTRACT.md ``summary.dropped``)."""

    model_config = ConfigDict(frozen=True)

    count: int
    reasons: list[DropReason] = Field(default_factory=list)


class Summary(BaseModel):
    model_config = ConfigDict(frozen=True, populate_by_name=True)

    docs_count: int = Field(alias="docsCount")
    duration_ms: float = Field(alias="durationMs")
    cost_usd: float | None = Field(default=None, alias="costUsd")
    redactions: list[Redaction] | None = None
    dropped: Dropped | None = None

    def wire(self) -> dict[str, Any]:
        return self.model_dump(by_alias=True, exclude_none=True)


class Doc(BaseModel):
    model_config = ConfigDict(frozen=True)

    slug: str
    title: str
    kind: DocKind
    order: int
    content: str

    def wire(self) -> dict[str, Any]:
        return self.model_dump()

    @property
    def size(self) -> int:
        return len(self.content.encode("utf-8")) + len(self.title.encode("utf-8")) + 64


class RequeueRecord(_Reply):
    """One ``operator:requeue`` of a dead job, kept on the job for audit."""

    at: float
    attempts: int
    deferrals: int
    last_error: str | None = Field(default=None, alias="lastError")
    last_error_kind: str | None = Field(default=None, alias="lastErrorKind")


class PublicJob(_Reply):
    """What ``jobs:get`` returns; only the fields the CLI reads are typed."""

    model_config = ConfigDict(extra="allow", frozen=True)

    job_id: str = Field(alias="jobId")
    status: str
    repo_url: str | None = Field(default=None, alias="repoUrl")
    branch: str | None = None
    attempts: int | None = None
    max_attempts: int | None = Field(default=None, alias="maxAttempts")
    deferrals: int | None = None
    result: Summary | None = None
    progress: Progress | None = None
    last_error: str | None = Field(default=None, alias="lastError")
    last_error_kind: str | None = Field(default=None, alias="lastErrorKind")
    run_at: float | None = Field(default=None, alias="runAt")
    user_id: str | None = Field(default=None, alias="userId")
    dedupe_key: str | None = Field(default=None, alias="dedupeKey")
    completed_at: float | None = Field(default=None, alias="completedAt")
    requeues: list[RequeueRecord] | None = None


# --- operator functions (convex/operator.ts, the stuck-jobs runbook) -----------------------


class StuckJob(_Reply):
    """One row of ``operator:listStuck``: never a lease token or a GitHub token."""

    model_config = ConfigDict(extra="ignore", frozen=True, populate_by_name=True)

    job_id: str = Field(alias="jobId")
    status: LeasedStatus
    why: StuckReason
    attempts: int
    max_attempts: int = Field(alias="maxAttempts")
    worker_id: str | None = Field(alias="workerId")
    lease_expires_at: float | None = Field(alias="leaseExpiresAt")
    started_at: float | None = Field(alias="startedAt")
    repo_url: str = Field(alias="repoUrl")
    branch: str | None
    cancel_requested: bool = Field(alias="cancelRequested")


class ReclaimedJob(_Reply):
    model_config = ConfigDict(extra="ignore", frozen=True, populate_by_name=True)

    job_id: str = Field(alias="jobId")
    outcome: ReclaimOutcome


class ReclaimReply(_Reply):
    """``operator:reclaimNow``: what the reclaim cron's pass did, run on demand."""

    moved: int  # back to pending
    dead: int
    canceled: int
    more: bool = False  # expired leases remain (a pass takes at most 100)
    jobs: list[ReclaimedJob] = Field(default_factory=list)

    @property
    def total(self) -> int:
        return self.moved + self.dead + self.canceled


class ReclaimCounts(_Reply):
    """``jobs:recoverWorker``: what became of the jobs a previous process still held."""

    moved: int  # back to pending, ready now
    dead: int
    canceled: int

    @property
    def total(self) -> int:
        return self.moved + self.dead + self.canceled


# --- per-worker credentials (convex/credentials.ts) --------------------------------------


class Credential(_Reply):
    """One row of ``credentials:list``: never the secret, only its hash's first 12 digits."""

    model_config = ConfigDict(extra="ignore", frozen=True, populate_by_name=True)

    credential_id: str = Field(alias="credentialId")
    worker_id: str = Field(alias="workerId")
    host: str | None = None
    fingerprint: str
    created_at: float = Field(alias="createdAt")
    revoked_at: float | None = Field(default=None, alias="revokedAt")


class IssueReply(_Reply):
    """``credentials:issue``: the credential (``created`` False when already registered)."""

    credential: Credential
    created: bool
    replaced: int  # the worker's previous credentials, revoked by this issue


class RevokeReply(_Reply):
    revoked: list[Credential]


class WorkerIdentity(_Reply):
    """``credentials:whoami``: the caller's own credential, or the shared token."""

    kind: Literal["credential", "shared"]
    worker_id: str | None = Field(default=None, alias="workerId")
    credential_id: str | None = Field(default=None, alias="credentialId")
