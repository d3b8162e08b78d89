"""The contract's enumerations (docs/CONTRACT.md), generated from convex/lib/policy.ts
by ``python -m scripts.contract``: edit policy.ts, then run it, never this file.
tests/docs/test_single_sources.py fails when this file is stale."""

from __future__ import annotations

from typing import Literal

# Every status a job can be in.
JobStatus = Literal[
    "pending",  # waiting for a worker: ready when runAt <= now, scheduled otherwise
    "assigned",  # handed to one idle worker slot by the dispatcher, not accepted yet
    "claimed",  # a worker holds its lease, the job has not started yet
    "running",  # a worker holds its lease and runs it
    "completed",  # done, its documents stored
    "failed",  # an attempt failed: it waits for its retry (runAt), like pending
    "dead",  # no attempt or deferral left; an operator may requeue it
    "canceled",  # canceled by its user or an operator
]
JOB_STATUSES: tuple[JobStatus, ...] = (
    "pending",
    "assigned",
    "claimed",
    "running",
    "completed",
    "failed",
    "dead",
    "canceled",
)


# Waiting for a worker: ready when runAt <= now, scheduled otherwise.
QueuedStatus = Literal[
    "pending",
    "failed",
]
QUEUED_STATUSES: tuple[QueuedStatus, ...] = (
    "pending",
    "failed",
)


# Held by a worker under a lease.
LeasedStatus = Literal[
    "claimed",
    "running",
]
LEASED_STATUSES: tuple[LeasedStatus, ...] = (
    "claimed",
    "running",
)


# Never leave these.
TerminalStatus = Literal[
    "completed",
    "dead",
    "canceled",
]
TERMINAL_STATUSES: tuple[TerminalStatus, ...] = (
    "completed",
    "dead",
    "canceled",
)


# A dedupeKey maps to at most one job in these states.
ActiveStatus = Literal[
    "pending",
    "assigned",
    "claimed",
    "running",
    "failed",
]
ACTIVE_STATUSES: tuple[ActiveStatus, ...] = (
    "pending",
    "assigned",
    "claimed",
    "running",
    "failed",
)


# Error kinds the worker reports to retryOrFail (docs/CONTRACT.md).
ErrorKind = Literal[
    "transient",
    "timeout",
    "permanent",
    "invalid_repository",
    "repository_not_found",
    "auth",
    "usage_limit",
    "disk",
    "shutdown",
]
ERROR_KINDS: tuple[ErrorKind, ...] = (
    "transient",
    "timeout",
    "permanent",
    "invalid_repository",
    "repository_not_found",
    "auth",
    "usage_limit",
    "disk",
    "shutdown",
)


# Why the worker left a generated file out of a job's documents (summary.dropped).
DropReason = Literal[
    "not_a_doc",  # not markdown or YAML
    "symlink",
    "too_large",  # one file over the per-file cap
    "unreadable",  # binary, not UTF-8, empty, changed while read, cannot open
    "outside_output",  # hard link or resolves outside the output directory
    "over_doc_cap",  # past the per-job document count cap
    "over_total_size",  # past the per-job total size cap
]
DROP_REASONS: tuple[DropReason, ...] = (
    "not_a_doc",
    "symlink",
    "too_large",
    "unreadable",
    "outside_output",
    "over_doc_cap",
    "over_total_size",
)


# What jobs:retryOrFail leaves a job in (a job status).
RetryOutcome = Literal[
    "failed",  # waits for its retry (runAt)
    "dead",  # no attempt or deferral left
    "pending",  # deferred: ready again at runAt, no attempt consumed
    "canceled",  # a cancel was requested meanwhile
]
RETRY_OUTCOMES: tuple[RetryOutcome, ...] = (
    "failed",
    "dead",
    "pending",
    "canceled",
)


# Why operator:listStuck reports a claimed/running job.
StuckReason = Literal[
    "lease_expired",  # its lease ran out: its worker died or lost Convex
    "running_too_long",  # running for longer than the threshold asked for
]
STUCK_REASONS: tuple[StuckReason, ...] = (
    "lease_expired",
    "running_too_long",
)


# What one expired lease became in a reclaim pass (a job status).
ReclaimOutcome = Literal[
    "pending",  # back in the queue, ready now (the attempt stays consumed)
    "dead",  # it was the last attempt
    "canceled",  # a cancel was requested
]
RECLAIM_OUTCOMES: tuple[ReclaimOutcome, ...] = (
    "pending",
    "dead",
    "canceled",
)


# What a generated document is.
DocKind = Literal[
    "chapter",  # under chapters/, or named chapter*
    "tutorial",  # under tutorials/, or named tutorial*
    "toc",  # index, toc, readme, table-of-contents or summary at the top
    "yaml",  # a .yaml or .yml file
    "other",
]
DOC_KINDS: tuple[DocKind, ...] = (
    "chapter",
    "tutorial",
    "toc",
    "yaml",
    "other",
)
