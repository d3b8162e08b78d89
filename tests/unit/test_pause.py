"""The pause rule for Claude's auth and usage-limit failures (pause.py)."""

from __future__ import annotations

import pytest

from fondation_worker.pause import ClaudePause, claude_pause

RECHECK = 300_000


def test_auth_waits_for_the_recheck_and_the_job_waits_as_long() -> None:
    assert claude_pause("auth", None, RECHECK) == ClaudePause("auth", RECHECK, RECHECK)


def test_usage_limit_waits_for_the_named_reset() -> None:
    assert claude_pause("usage_limit", 42_000, RECHECK) == ClaudePause(
        "usage_limit", 42_000, 42_000
    )


def test_usage_limit_without_a_reset_leaves_the_job_to_convex_backoff() -> None:
    assert claude_pause("usage_limit", None, RECHECK) == ClaudePause("usage_limit", RECHECK, None)


@pytest.mark.parametrize(
    "kind", [None, "ok", "transient", "permanent", "timeout", "disk", "shutdown"]
)
def test_other_failures_do_not_pause(kind: str | None) -> None:
    assert claude_pause(kind, 1_000, RECHECK) is None
