"""Convex over HTTP (docs/CONTRACT.md): typed calls, timeouts, bounded retries.

``POST {CONVEX_URL}/api/mutation|query`` with ``{"path", "args", "format": "json"}``. A
function error arrives with HTTP 200 (open-source backend) or 560 (hosted); its
``errorData.code`` maps to one exception each. Transport errors and other 5xx are retried
a bounded number of times with jittered back-off; 4xx are not, except 429 (rate limited):
Convex refused the request without running it, so it is retried whatever the call's retry
budget, after the ``Retry-After`` the reply names (capped) or a back-off. Arguments are
never logged: they carry the worker token, lease tokens and GitHub tokens.
"""

from __future__ import annotations

import email.utils
import random
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal, Protocol

import httpx
from pydantic import BaseModel, SecretStr, ValidationError

from . import __version__
from .backoff import retry_delay_s
from .errors import (
    ConvexCodedError,
    ConvexFunctionError,
    ConvexLeaseLost,
    ConvexRequestError,
    ConvexUnavailable,
    ErrorKind,
    InvalidArgument,
    InvalidState,
    NotFound,
    Unauthorized,
    WorkerError,
)
from .logging_setup import get_logger
from .metrics import Metrics
from .models import (
    CancelReply,
    ClaimedJob,
    Credential,
    Doc,
    EnqueueReply,
    HeartbeatReply,
    IssueReply,
    Offer,
    Progress,
    PublicJob,
    ReclaimCounts,
    ReclaimReply,
    RetryReply,
    RevokeReply,
    StuckJob,
    Summary,
    UploadReply,
    WithdrawReply,
    WorkerIdentity,
)
from .units import milliseconds

log = get_logger(__name__)

FUNCTION_ERROR_STATUSES = frozenset({200, 560})
RATE_LIMITED = 429
# A 429 is retried this many times per call; one wait is at most this long (a heartbeat
# waiting out a long Retry-After would lose its lease anyway).
RATE_LIMIT_RETRIES = 5
MAX_RETRY_AFTER_S = 30.0


def retry_after_s(value: str | None, now: float) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or HTTP-date), or None."""
    if value is None:
        return None
    text = value.strip()
    if text.isdigit():
        return float(text)
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        return None
    return max(0.0, when.timestamp() - now)


_CODES: dict[str, type[WorkerError]] = {
    "UNAUTHORIZED": Unauthorized,
    "LEASE_LOST": ConvexLeaseLost,
    "INVALID_ARGUMENT": InvalidArgument,
    "NOT_FOUND": NotFound,
    "INVALID_STATE": InvalidState,
}


class _Envelope(BaseModel):
    status: Literal["success", "error"]
    value: Any = None
    errorMessage: str | None = None
    errorData: Any = None


def error_for(path: str, message: str | None, data: Any) -> WorkerError:
    """The exception for a function error reply."""
    code = data.get("code") if isinstance(data, Mapping) else None
    text = data.get("message") if isinstance(data, Mapping) else None
    detail = str(text or message or "function failed")[:500]
    cls = _CODES.get(str(code)) if code else None
    if cls is None:
        return ConvexFunctionError(f"{path}: {detail}")
    return cls(f"{path}: {detail}")


class ConvexClient:
    """The worker's and the CLI's only way to reach Convex."""

    def __init__(
        self,
        url: str,
        token: SecretStr,
        *,
        timeout_s: float = 10.0,
        max_retries: int = 3,
        metrics: Metrics | None = None,
        transport: httpx.BaseTransport | None = None,
        sleep: Callable[[float], None] = time.sleep,
        rand: Callable[[], float] = random.random,
    ) -> None:
        self._url = url.rstrip("/")
        self._token = token
        self._timeout_s = timeout_s
        self._max_retries = max_retries
        self._metrics = metrics
        self._sleep = sleep
        self._rand = rand
        self._http = httpx.Client(
            timeout=httpx.Timeout(timeout_s),
            transport=transport,
            headers={"User-Agent": f"fondation-worker/{__version__}"},
            follow_redirects=False,
            trust_env=True,
        )

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> ConvexClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- transport ----------------------------------------------------------------------

    def call(
        self,
        kind: Literal["mutation", "query"],
        path: str,
        args: Mapping[str, Any],
        *,
        retries: int | None = None,
        timeout_s: float | None = None,
    ) -> Any:
        """One Convex function call; returns the reply's ``value``."""
        body = {"path": path, "args": dict(args), "format": "json"}
        endpoint = f"{self._url}/api/{kind}"
        max_retries = self._max_retries if retries is None else retries
        timeout = httpx.Timeout(timeout_s if timeout_s is not None else self._timeout_s)
        attempt = 0
        rate_limited = 0
        while True:
            attempt += 1
            started = time.monotonic()
            try:
                response = self._http.post(endpoint, json=body, timeout=timeout)
            except httpx.HTTPError as exc:
                problem: str = f"{type(exc).__name__}"
                self._count(path, "transport_error")
            else:
                if response.status_code == RATE_LIMITED and rate_limited < RATE_LIMIT_RETRIES:
                    # Not run by Convex: a retry cannot apply it twice, so it neither uses the
                    # call's retry budget nor makes a later error "after retry".
                    rate_limited += 1
                    attempt -= 1
                    self._count(path, "http_429")
                    self._wait_rate_limited(path, response, rate_limited)
                    continue
                if response.status_code in FUNCTION_ERROR_STATUSES:
                    envelope = self._envelope(response)
                    if envelope is not None:
                        return self._finish(path, envelope, started, attempt)
                    problem = f"HTTP {response.status_code} with an unreadable body"
                    self._count(path, "bad_reply")
                elif response.status_code == RATE_LIMITED:
                    log.warning("convex.rate_limited_gave_up", function=path, retries=rate_limited)
                    raise ConvexUnavailable(f"{path}: HTTP 429 after {rate_limited} wait(s)")
                elif response.status_code >= 500:
                    problem = f"HTTP {response.status_code}"
                    self._count(path, "http_5xx")
                else:
                    self._count(path, f"http_{response.status_code}")
                    raise ConvexRequestError(
                        f"{path}: HTTP {response.status_code}: {response.text[:200]}"
                    )
            if attempt > max_retries:
                log.warning("convex.call_failed", function=path, problem=problem, attempts=attempt)
                raise ConvexUnavailable(f"{path}: {problem} after {attempt} attempt(s)")
            delay = retry_delay_s(attempt, 0.5, 8.0, self._rand())
            log.info(
                "convex.call_retry", function=path, problem=problem, attempt=attempt, delay_s=delay
            )
            self._sleep(delay)

    def _wait_rate_limited(self, path: str, response: httpx.Response, nth: int) -> None:
        named = retry_after_s(response.headers.get("retry-after"), time.time())
        if named is None:
            delay = retry_delay_s(nth, 0.5, 8.0, self._rand())
        else:
            delay = min(named, MAX_RETRY_AFTER_S)
        log.info("convex.rate_limited", function=path, retry=nth, delay_s=delay)
        self._sleep(delay)

    def _envelope(self, response: httpx.Response) -> _Envelope | None:
        try:
            return _Envelope.model_validate(response.json())
        except (ValueError, ValidationError):
            return None

    def _finish(self, path: str, envelope: _Envelope, started: float, attempt: int) -> Any:
        elapsed_ms = milliseconds(time.monotonic() - started)
        if envelope.status == "success":
            self._count(path, "ok")
            log.debug("convex.call", function=path, ms=elapsed_ms)
            return envelope.value
        error = error_for(path, envelope.errorMessage, envelope.errorData)
        code = getattr(error, "code", "function_error")
        self._count(path, str(code).lower())
        # Retried after an ambiguous failure: the first try may have been applied.
        error.after_retry = attempt > 1
        raise error

    def _count(self, path: str, outcome: str) -> None:
        if self._metrics is not None:
            self._metrics.convex_calls.labels(function=path, outcome=outcome).inc()

    def _auth(self) -> dict[str, Any]:
        return {"token": self._token.get_secret_value()}

    @staticmethod
    def _parse(model: type[BaseModel], path: str, value: Any) -> Any:
        try:
            return model.model_validate(value)
        except ValidationError as exc:
            raise ConvexFunctionError(
                f"{path}: reply does not match the contract ({exc.error_count()} problem(s))"
            ) from None

    # --- worker-facing ------------------------------------------------------------------

    def claim_one(
        self,
        worker_id: str,
        lease_ms: int,
        request_id: str | None = None,
        *,
        start: bool = False,
        slots: Sequence[int] = (0,),
        accept_ms: int | None = None,
    ) -> ClaimedJob | None:
        """Accept a job assigned to one of ``slots`` (tried in order), else offer them for
        dispatch and return None."""
        args: dict[str, Any] = {
            **self._auth(),
            "workerId": worker_id,
            "leaseMs": lease_ms,
            "requestId": request_id or str(uuid.uuid4()),
            "slots": list(slots),
        }
        if accept_ms is not None:
            args["acceptMs"] = accept_ms
        if start:
            args["start"] = True  # straight to running: no separate jobs:start call
        # One retry, with the same request id (a repeated id returns the same claim): the
        # scheduler retries within seconds too, and a shutdown signal is not held up long.
        value = self.call("mutation", "jobs:claimOne", args, retries=1)
        if value is None:
            return None
        job: ClaimedJob = self._parse(ClaimedJob, "jobs:claimOne", value)
        return job

    def withdraw(
        self, worker_id: str, reason: str, slots: Sequence[int] | None = None
    ) -> WithdrawReply:
        """Take this worker's slots out of dispatch; what was assigned goes back unspent."""
        args: dict[str, Any] = {**self._auth(), "workerId": worker_id, "reason": reason}
        if slots is not None:
            args["slots"] = list(slots)
        value = self.call("mutation", "jobs:withdraw", args, retries=1)
        reply: WithdrawReply = self._parse(WithdrawReply, "jobs:withdraw", value)
        return reply

    def recover_worker(self, worker_id: str) -> ReclaimCounts:
        """Give back the jobs a previous process with this worker id still holds."""
        value = self.call(
            "mutation", "jobs:recoverWorker", {**self._auth(), "workerId": worker_id}, retries=2
        )
        counts: ReclaimCounts = self._parse(ReclaimCounts, "jobs:recoverWorker", value)
        return counts

    def start(self, job_id: str, lease_token: SecretStr) -> None:
        self.call("mutation", "jobs:start", self._fenced(job_id, lease_token))

    def heartbeat(
        self,
        job_id: str,
        lease_token: SecretStr,
        lease_ms: int,
        progress: Progress | None = None,
        *,
        timeout_s: float | None = None,
    ) -> HeartbeatReply:
        args: dict[str, Any] = {**self._fenced(job_id, lease_token), "leaseMs": lease_ms}
        if progress is not None and progress.wire():
            args["progress"] = progress.wire()
        value = self.call("mutation", "jobs:heartbeat", args, retries=0, timeout_s=timeout_s)
        reply: HeartbeatReply = self._parse(HeartbeatReply, "jobs:heartbeat", value)
        return reply

    def upload_docs(
        self, job_id: str, lease_token: SecretStr, run_id: str, docs: Sequence[Doc]
    ) -> int:
        args = {
            **self._fenced(job_id, lease_token),
            "runId": run_id,
            "docs": [d.wire() for d in docs],
        }
        reply: UploadReply = self._parse(
            UploadReply, "docs:uploadDocs", self.call("mutation", "docs:uploadDocs", args)
        )
        return reply.stored

    def complete(
        self,
        job_id: str,
        lease_token: SecretStr,
        run_id: str,
        summary: Summary,
        docs: Sequence[Doc] = (),
        offer: Offer | None = None,
    ) -> None:
        """Complete the run; ``docs`` is its last batch (at most one upload's worth);
        ``offer`` puts the freed slot back into dispatch in the same call."""
        args: dict[str, Any] = {
            **self._fenced(job_id, lease_token),
            "runId": run_id,
            "summary": summary.wire(),
        }
        if docs:
            args["docs"] = [d.wire() for d in docs]
        if offer is not None:
            args["offer"] = offer.wire()
        self.call("mutation", "jobs:complete", args)

    def retry_or_fail(
        self,
        job_id: str,
        lease_token: SecretStr,
        error: str,
        kind: ErrorKind,
        retry_after_ms: int | None = None,
        offer: Offer | None = None,
    ) -> RetryReply:
        args: dict[str, Any] = {**self._fenced(job_id, lease_token), "error": error}
        args["errorKind"] = kind
        if retry_after_ms is not None:
            args["retryAfterMs"] = retry_after_ms
        if offer is not None:
            args["offer"] = offer.wire()
        value = self.call("mutation", "jobs:retryOrFail", args)
        reply: RetryReply = self._parse(RetryReply, "jobs:retryOrFail", value)
        return reply

    def release(self, job_id: str, lease_token: SecretStr, reason: str) -> None:
        args = {**self._fenced(job_id, lease_token), "reason": reason}
        # Called while shutting down: bounded tightly so the drain fits the stop timeout.
        # If it fails, the lease expires and the job comes back anyway.
        self.call("mutation", "jobs:release", args, retries=1, timeout_s=min(self._timeout_s, 5.0))

    def acknowledge_cancel(
        self, job_id: str, lease_token: SecretStr, offer: Offer | None = None
    ) -> None:
        args = self._fenced(job_id, lease_token)
        if offer is not None:
            args["offer"] = offer.wire()
        self.call("mutation", "jobs:acknowledgeCancel", args)

    def _fenced(self, job_id: str, lease_token: SecretStr) -> dict[str, Any]:
        return {**self._auth(), "jobId": job_id, "leaseToken": lease_token.get_secret_value()}

    # --- operator-facing (CLI) ----------------------------------------------------------

    def enqueue(
        self,
        repo_url: str,
        branch: str | None = None,
        *,
        github_token: SecretStr | None = None,
        max_attempts: int | None = None,
        user_id: str | None = None,
        dedupe_key: str | None = None,
        target_worker_id: str | None = None,
    ) -> EnqueueReply:
        args: dict[str, Any] = {**self._auth(), "repoUrl": repo_url}
        optional: dict[str, Any] = {
            "branch": branch,
            "maxAttempts": max_attempts,
            "userId": user_id,
            "dedupeKey": dedupe_key,
            "targetWorkerId": target_worker_id,
            "githubToken": github_token.get_secret_value() if github_token else None,
        }
        args.update({k: v for k, v in optional.items() if v is not None})
        # Not retried: a lost reply could enqueue twice without a dedupe key.
        value = self.call("mutation", "jobs:enqueue", args, retries=0)
        reply: EnqueueReply = self._parse(EnqueueReply, "jobs:enqueue", value)
        return reply

    def cancel(self, job_id: str) -> CancelReply:
        value = self.call("mutation", "jobs:cancel", {**self._auth(), "jobId": job_id})
        reply: CancelReply = self._parse(CancelReply, "jobs:cancel", value)
        return reply

    def get_job(self, job_id: str, lease_token: SecretStr | None = None) -> PublicJob | None:
        """The job as an operator sees it; with ``lease_token``, as the worker that holds it
        (a worker token reads no other job)."""
        args: dict[str, Any] = {**self._auth(), "jobId": job_id}
        if lease_token is not None:
            args["leaseToken"] = lease_token.get_secret_value()
        value = self.call("query", "jobs:get", args)
        if value is None:
            return None
        job: PublicJob = self._parse(PublicJob, "jobs:get", value)
        return job

    def queue_metrics(self) -> dict[str, Any]:
        value = self.call("query", "metrics:queue", self._auth())
        if not isinstance(value, dict):
            raise ConvexFunctionError("metrics:queue: reply is not an object")
        return value

    # --- operator functions: the stuck-jobs runbook (convex/operator.ts) -----------------

    def list_stuck(
        self, running_longer_than_ms: int | None = None, limit: int | None = None
    ) -> list[StuckJob]:
        """Claimed/running jobs whose lease expired, or running longer than the threshold."""
        args: dict[str, Any] = self._auth()
        if running_longer_than_ms is not None:
            args["runningLongerThanMs"] = running_longer_than_ms
        if limit is not None:
            args["limit"] = limit
        value = self.call("query", "operator:listStuck", args)
        if not isinstance(value, list):
            raise ConvexFunctionError("operator:listStuck: reply is not a list")
        return [self._parse(StuckJob, "operator:listStuck", item) for item in value]

    def reclaim_now(self) -> ReclaimReply:
        """The dispatcher's reclaim pass, now (safe to repeat: it only takes expired leases)."""
        value = self.call("mutation", "operator:reclaimNow", self._auth())
        reply: ReclaimReply = self._parse(ReclaimReply, "operator:reclaimNow", value)
        return reply

    def requeue(self, job_id: str) -> PublicJob:
        """A dead job back to pending (INVALID_STATE for any other state)."""
        # Not retried: after a lost reply the retry would be refused (no longer dead).
        value = self.call(
            "mutation", "operator:requeue", {**self._auth(), "jobId": job_id}, retries=0
        )
        job: PublicJob = self._parse(PublicJob, "operator:requeue", value)
        return job

    # --- per-worker credentials (convex/credentials.ts) ----------------------------------

    def whoami(self) -> WorkerIdentity:
        """Whose credential this client's token is (a worker token: its own or the shared)."""
        value = self.call("query", "credentials:whoami", self._auth())
        identity: WorkerIdentity = self._parse(WorkerIdentity, "credentials:whoami", value)
        return identity

    def issue_credential(
        self, worker_id: str, secret_hash: str, host: str | None = None
    ) -> IssueReply:
        """Register the SHA-256 of a credential for ``worker_id`` (operator token); the
        secret itself never leaves the caller. Safe to retry: the same hash is answered as
        already registered."""
        args: dict[str, Any] = {**self._auth(), "workerId": worker_id, "secretHash": secret_hash}
        if host is not None:
            args["host"] = host
        value = self.call("mutation", "credentials:issue", args)
        reply: IssueReply = self._parse(IssueReply, "credentials:issue", value)
        return reply

    def list_credentials(
        self,
        *,
        worker_id: str | None = None,
        host: str | None = None,
        include_revoked: bool = False,
    ) -> list[Credential]:
        args: dict[str, Any] = self._auth()
        if worker_id is not None:
            args["workerId"] = worker_id
        if host is not None:
            args["host"] = host
        if include_revoked:
            args["includeRevoked"] = True
        value = self.call("query", "credentials:list", args)
        if not isinstance(value, list):
            raise ConvexFunctionError("credentials:list: reply is not a list")
        return [self._parse(Credential, "credentials:list", item) for item in value]

    def revoke_credentials(
        self,
        *,
        worker_id: str | None = None,
        host: str | None = None,
        credential_id: str | None = None,
    ) -> RevokeReply:
        """Revoke one worker's, one host's or one credential (safe to repeat)."""
        selectors = {"workerId": worker_id, "host": host, "credentialId": credential_id}
        args: dict[str, Any] = {**self._auth(), **{k: v for k, v in selectors.items() if v}}
        value = self.call("mutation", "credentials:revoke", args)
        reply: RevokeReply = self._parse(RevokeReply, "credentials:revoke", value)
        return reply


__all__ = ["ConvexClient", "ConvexCodedError", "QueueApi", "error_for"]


class QueueApi(Protocol):
    """The worker-facing calls, as the job runner and scheduler use them (fakes in tests)."""

    def claim_one(
        self,
        worker_id: str,
        lease_ms: int,
        request_id: str | None = None,
        *,
        start: bool = False,
        slots: Sequence[int] = (0,),
        accept_ms: int | None = None,
    ) -> ClaimedJob | None: ...

    def withdraw(
        self, worker_id: str, reason: str, slots: Sequence[int] | None = None
    ) -> WithdrawReply: ...

    def start(self, job_id: str, lease_token: SecretStr) -> None: ...

    def heartbeat(
        self,
        job_id: str,
        lease_token: SecretStr,
        lease_ms: int,
        progress: Progress | None = None,
        *,
        timeout_s: float | None = None,
    ) -> HeartbeatReply: ...

    def upload_docs(
        self, job_id: str, lease_token: SecretStr, run_id: str, docs: Sequence[Doc]
    ) -> int: ...

    def complete(
        self,
        job_id: str,
        lease_token: SecretStr,
        run_id: str,
        summary: Summary,
        docs: Sequence[Doc] = (),
        offer: Offer | None = None,
    ) -> None: ...

    def retry_or_fail(
        self,
        job_id: str,
        lease_token: SecretStr,
        error: str,
        kind: ErrorKind,
        retry_after_ms: int | None = None,
        offer: Offer | None = None,
    ) -> RetryReply: ...

    def release(self, job_id: str, lease_token: SecretStr, reason: str) -> None: ...

    def acknowledge_cancel(
        self, job_id: str, lease_token: SecretStr, offer: Offer | None = None
    ) -> None: ...

    def get_job(self, job_id: str, lease_token: SecretStr | None = None) -> PublicJob | None: ...
