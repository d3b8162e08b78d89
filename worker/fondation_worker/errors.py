"""One exception hierarchy; each class says what the caller should do.

- ``RetryLater``: a transient problem; try the same thing again later.
- ``GiveUp``: retrying the same call cannot succeed; stop and report.
- ``LeaseLost``: another worker may own the job now; self-fence (kill, discard, forget).
- ``OperatorActionNeeded``: a human must fix credentials or configuration.
- ``JobFailed``: the job cannot go on; report it with ``retryOrFail`` and this ``kind``.
- ``JobAborted``: we stopped the job on purpose (cancel, fence, shutdown, timeout).
"""

from __future__ import annotations

from typing import Literal

# The contract's errorKind values (from convex/lib/policy.ts), named here for the raisers.
from .contract import ErrorKind as ErrorKind

AbortReason = Literal["cancel", "fence", "shutdown", "timeout"]


class WorkerError(Exception):
    """Base of every error the worker raises on purpose."""

    # True when a call was retried after an ambiguous failure (the first try may have
    # been applied): "INVALID_STATE" then may just mean "already done".
    after_retry: bool = False


class ConfigError(WorkerError):
    """The configuration is invalid; one message per problem."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


class RetryLater(WorkerError):
    """Transient: the same operation may succeed later."""

    def __init__(self, message: str, retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class GiveUp(WorkerError):
    """Permanent for this call: do not retry it."""


class LeaseLost(WorkerError):
    """We no longer hold the job's lease: stop touching the job."""


class OperatorActionNeeded(WorkerError):
    """Credentials or configuration need a human."""


# --- Convex ---------------------------------------------------------------------------


class ConvexUnavailable(RetryLater):
    """Transport error, timeout or 5xx from Convex after the client's own retries."""


class ConvexFunctionError(RetryLater):
    """A Convex function failed without a ConvexError code (bug, conflict, validator)."""


class ConvexRequestError(GiveUp):
    """Convex refused the request itself (4xx other than a function error)."""


class ConvexCodedError(GiveUp):
    """A ``ConvexError`` with one of the contract's codes that means "do not retry"."""

    code = "UNKNOWN"


class InvalidArgument(ConvexCodedError):
    code = "INVALID_ARGUMENT"


class NotFound(ConvexCodedError):
    code = "NOT_FOUND"


class InvalidState(ConvexCodedError):
    code = "INVALID_STATE"


class Unauthorized(OperatorActionNeeded):
    """The worker token was refused by Convex."""

    code = "UNAUTHORIZED"


class ConvexLeaseLost(LeaseLost):
    code = "LEASE_LOST"


# --- Jobs -----------------------------------------------------------------------------


class JobFailed(WorkerError):
    """The job cannot go on; report it via ``retryOrFail`` with ``kind``."""

    def __init__(self, kind: ErrorKind, message: str, retry_after_ms: int | None = None) -> None:
        super().__init__(message)
        self.kind: ErrorKind = kind
        self.message = message
        self.retry_after_ms = retry_after_ms


class JobAborted(WorkerError):
    """The job was stopped on purpose; ``reason`` says how to finish it."""

    def __init__(self, reason: AbortReason) -> None:
        super().__init__(f"job aborted: {reason}")
        self.reason: AbortReason = reason
