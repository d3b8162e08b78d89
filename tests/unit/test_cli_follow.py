"""``enqueue --wait --timeout``: a job that has not ended in time is canceled, exit 4 (the
rollout's smoke job must never be left queued for the worker it targets)."""

from __future__ import annotations

from typing import Any, cast

import pytest

from fondation_worker.cli.operator import follow
from fondation_worker.cli.support import EXIT_TIMED_OUT
from fondation_worker.convex_client import ConvexClient
from fondation_worker.models import CancelReply, PublicJob


class _Queue:
    def __init__(self, statuses: list[str]) -> None:
        self.statuses = statuses
        self.canceled: list[str] = []

    def get_job(self, job_id: str) -> PublicJob:
        status = self.statuses.pop(0) if len(self.statuses) > 1 else self.statuses[0]
        return PublicJob.model_validate({"jobId": job_id, "status": status})

    def cancel(self, job_id: str) -> CancelReply:
        self.canceled.append(job_id)
        return CancelReply(status="canceled")


def run(queue: _Queue, timeout_s: float | None) -> int:
    return follow(cast(ConvexClient, queue), "j1", 0.01, timeout_s)


def test_a_job_still_running_at_the_timeout_is_canceled(capsys: pytest.CaptureFixture[Any]) -> None:
    queue = _Queue(["running"])
    assert run(queue, 0.05) == EXIT_TIMED_OUT == 4
    assert queue.canceled == ["j1"]
    assert "did not end within 0.05 s: canceled" in capsys.readouterr().out


def test_a_job_that_ends_in_time_keeps_its_exit_code() -> None:
    assert run(_Queue(["pending", "running", "completed"]), 5) == 0
    dead = _Queue(["running", "dead"])
    assert run(dead, 5) == 1
    assert dead.canceled == []
