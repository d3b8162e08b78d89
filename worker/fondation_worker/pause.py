"""The pause rule for Claude's auth and usage-limit failures, written once.

A failed login or a reached usage limit is not the job's fault: the job is deferred (its
attempt given back) and the worker stops claiming until a re-check (a tiny real Claude
call) passes. This module says which failures do that and for how long; the job runner
(the job's ``retryAfterMs``) and the scheduler (when to re-check) both ask it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

ClaudePauseReason = Literal["auth", "usage_limit"]


@dataclass(frozen=True)
class ClaudePause:
    reason: ClaudePauseReason
    # How long this worker claims nothing before its re-check.
    wait_ms: int
    # The deferred job's retryAfterMs; None leaves the delay to Convex's deferral back-off.
    defer_ms: int | None


def claude_pause(
    kind: str | None, retry_after_ms: int | None, recheck_ms: int
) -> ClaudePause | None:
    """The pause a failure of ``kind`` calls for, or None when it calls for none.

    - ``auth``: an operator must fix the login. The worker re-checks every AUTH_RECHECK_MS
      (``recheck_ms``) and the job waits as long.
    - ``usage_limit``: until the reset the CLI named (``retry_after_ms``); without one the
      worker re-checks after AUTH_RECHECK_MS and the job is left to Convex's back-off, so a
      worker with another account may take it sooner.
    """
    if kind == "auth":
        wait_ms = recheck_ms if retry_after_ms is None else retry_after_ms
        return ClaudePause("auth", wait_ms, wait_ms)
    if kind == "usage_limit":
        wait_ms = recheck_ms if retry_after_ms is None else retry_after_ms
        return ClaudePause("usage_limit", wait_ms, retry_after_ms)
    return None
