"""The chaos suite's invariant checks and plans, on synthetic records (no containers)."""

from __future__ import annotations

import json
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import pytest

from chaos.faults import plan_faults
from chaos.invariants import (
    LogEvent,
    check_final_states,
    check_landlock,
    check_no_overlap,
    check_recovery,
    check_single_completion,
    close_open_executions,
    completions,
    overlaps,
    recovery_time,
    stuck_until,
)
from chaos.load import plan_jobs
from chaos.models import (
    FAULT_KINDS,
    EnqueuedJob,
    Execution,
    FaultEvent,
    Observation,
    PlannedJob,
    RunConfig,
)
from chaos.report import subscription_downtime


def run(job: str, worker: str, start: float, end: float, *, known: bool = True) -> Execution:
    return Execution(
        job=job,
        worker=worker,
        host=f"h-{worker}",
        pid=int(start * 10),
        step="abstractions",
        kind="normal",
        start=start,
        end=end,
        end_known=known,
        outcome="ok" if known else "died",
    )


def test_overlap_of_two_workers_on_one_job_is_found() -> None:
    pairs = overlaps([run("j1", "w1", 0, 10), run("j1", "w2", 9.5, 12), run("j2", "w2", 0, 20)])
    assert [(a.worker, b.worker) for a, b in pairs] == [("w1", "w2")]
    result, jobs = check_no_overlap([run("j1", "w1", 0, 10), run("j1", "w2", 9.5, 12)])
    assert not result.ok
    assert jobs == {"j1"}


def test_back_to_back_executions_do_not_overlap() -> None:
    result, jobs = check_no_overlap(
        [run("j1", "w1", 0, 10), run("j1", "w2", 10, 12), run("j1", "w1", 12.5, 13)]
    )
    assert result.ok
    assert jobs == set()


def test_an_execution_without_end_ends_when_its_worker_logged_the_job_gone() -> None:
    open_run = run("j1", "w1", 0, 100, known=False)
    gone = LogEvent(worker="w1", t=7.0, event="job.fenced", job_id="j1", attempt=1)
    unrelated = LogEvent(worker="w2", t=3.0, event="job.fenced", job_id="j1", attempt=2)
    closed = close_open_executions([open_run], [gone, unrelated])
    assert closed[0].end == 7.0
    # Without that line it keeps the conservative end, and overlaps a later run.
    result, _ = check_no_overlap([open_run, run("j1", "w2", 8, 9)])
    assert not result.ok


def observation(t: float, status: str, generation: int = 1, lease: float = 0) -> Observation:
    return Observation(t=t, status=status, generation=generation, lease_until=lease)


def test_recovery_time_counts_until_the_job_is_back_in_the_queue() -> None:
    history = [
        observation(0, "running", 1, 6),
        observation(11, "running", 1, 6),
        observation(13.5, "pending", 1),
    ]
    assert recovery_time(history, start=10, end=12) == pytest.approx(3.5)


def test_recovery_time_sees_a_reclaim_by_another_worker() -> None:
    history = [observation(0, "running", 1, 6), observation(14, "claimed", 2, 20)]
    assert recovery_time(history, start=10, end=12) == pytest.approx(4)


def test_recovery_time_of_a_holder_that_kept_its_lease_is_its_next_renewal() -> None:
    history = [
        observation(0, "running", 1, 6),
        observation(9, "running", 1, 16),  # renewed during the fault: not yet recovered
        observation(13, "running", 1, 19),
    ]
    assert recovery_time(history, start=8, end=12) == pytest.approx(5)
    assert recovery_time(history[:2], start=8, end=12) is None


def test_a_slow_poller_does_not_make_a_recovery_late() -> None:
    # Back in the queue at about 17.5 s, but the poll sent at 16.8 s answered only at 20.2 s
    # (a busy host): seen at 20.2 s, known stuck only until 16.8 s, the previous poll's send.
    history = [
        observation(0, "running", 1, 6),
        Observation(t=20.2, since=16.8, status="pending", generation=1),
    ]
    assert recovery_time(history, start=10, end=12) == pytest.approx(10.2)
    assert stuck_until(history, start=10, end=12) == pytest.approx(6.8)


def test_a_job_still_stuck_after_the_bound_is_late() -> None:
    bound = RunConfig(out=Path("/nonexistent")).recovery_bound_s
    late = [
        observation(0, "running", 1, 6),
        Observation(t=10 + bound + 2.0, since=10 + bound + 1.5, status="pending", generation=1),
    ]
    in_time = [
        observation(0, "running", 1, 6),
        Observation(t=10 + bound + 2.0, since=10 + bound - 0.5, status="pending", generation=1),
    ]
    event = FaultEvent(kind="sigkill", target="w1", start=10, end=10, affected=["j"], bound_s=bound)
    assert not check_recovery([event], {"j": late})[0].ok
    assert check_recovery([event], {"j": in_time})[0].ok


def enqueued(job_id: str, kind: str, cancel_reply: str | None = None) -> EnqueuedJob:
    plan = PlannedJob(index=0, kind=kind, at_s=0, repo="normal", dedupe_key=f"k-{job_id}")  # type: ignore[arg-type]
    return EnqueuedJob(plan=plan, job_id=job_id, enqueued_t=0, cancel_reply=cancel_reply)


def test_final_states_follow_the_kind() -> None:
    jobs = [
        enqueued("a", "normal"),
        enqueued("b", "poison"),
        enqueued("c", "cancel_running", "running"),
        enqueued("d", "cancel_running", "completed"),
    ]
    latest = {
        "a": observation(1, "completed"),
        "b": observation(1, "dead"),
        "c": observation(1, "canceled"),
        "d": observation(1, "completed"),
    }
    assert check_final_states(jobs, latest).ok
    latest["b"] = observation(1, "pending")
    result = check_final_states(jobs, latest)
    assert not result.ok
    assert "1 not terminal" in result.detail


def test_a_job_completed_by_two_claims_or_with_two_doc_generations_fails() -> None:
    jobs = [enqueued("a", "normal"), enqueued("b", "normal")]
    latest = {"a": observation(1, "completed"), "b": observation(1, "completed")}
    rows = [
        {"_id": "a", "docsRunId": "r1", "result": {"docsCount": 1}},
        {"_id": "b", "docsRunId": "r3", "result": {"docsCount": 1}},
    ]
    docs = [
        {"jobId": "a", "runId": "r1"},
        {"jobId": "b", "runId": "r2"},
        {"jobId": "b", "runId": "r3"},
    ]
    logs = [
        LogEvent("w1", 1, "job.completed", "a", 1),
        LogEvent("w1", 1.1, "job.completed", "a", 1),  # a retried call: the same claim
        LogEvent("w1", 2, "job.completed", "b", 1),
    ]
    assert completions(logs) == Counter({"a": 1, "b": 1})
    result, bad = check_single_completion(jobs, latest, completions(logs), rows, docs)
    assert not result.ok
    assert bad == {"b"}
    logs.append(LogEvent("w2", 3, "job.completed", "a", 2))
    _, bad = check_single_completion(jobs, latest, completions(logs), rows, docs)
    assert bad == {"a", "b"}


def test_the_plans_are_seeded_and_complete() -> None:
    first = plan_jobs(60, 120, seed=7, run_id="x")
    assert first == plan_jobs(60, 120, seed=7, run_id="x")
    assert first != plan_jobs(60, 120, seed=8, run_id="x")
    assert len(first) == 60
    kinds = Counter(job.kind for job in first)
    assert set(kinds) == {
        "normal",
        "transient",
        "poison",
        "poison_kill",
        "private",
        "cancel_pending",
        "cancel_running",
        "duplicate",
    }
    config = RunConfig(jobs=60, workers=3, duration_s=150, seed=7, out=Path("/nonexistent"))
    faults = plan_faults(config, 150)
    assert {f.kind for f in faults} == set(FAULT_KINDS)
    assert faults[0].kind == "disk"
    assert [f.at_s for f in faults] == sorted(f.at_s for f in faults)
    assert all(f.at_s < 150 for f in faults)


# --- time without the wake subscription (report) ---------------------------------------


def wake_line(event: str, at: float, **fields: float) -> str:
    ts = datetime.fromtimestamp(at, UTC).isoformat().replace("+00:00", "Z")
    return json.dumps({"event": event, "ts": ts, **fields})


def test_gaps_are_summed_and_an_open_outage_counts_until_the_end(tmp_path: Path) -> None:
    a = tmp_path / "a.log"
    a.write_text(
        "\n".join(
            [
                wake_line("worker.started", 1000.0),
                wake_line("wakeup.subscribed", 1000.5, down_s=0.5),  # start-up
                wake_line("wakeup.down", 1100.0),  # a network cut
                "not json",
                wake_line("wakeup.subscribed", 1121.0, down_s=21.0),
                wake_line("wakeup.down", 1200.0),  # still down at the end
            ]
        )
        + "\n"
    )
    b = tmp_path / "b.log"
    b.write_text(wake_line("wakeup.subscribed", 1000.2, down_s=0.2) + "\n")
    report = subscription_downtime({"a": a, "b": b, "gone": tmp_path / "missing"}, end=1230.0)
    assert report == {
        "a": {"outages": 2, "without_subscription_s": 51.5},
        "b": {"outages": 0, "without_subscription_s": 0.2},
    }


def test_landlock_check_reads_every_start_of_every_worker(tmp_path: Path) -> None:
    on = '{"event": "worker.layers", "landlock": "on (ABI 7)", "cli": "on"}\n'
    off = '{"event": "worker.layers", "landlock": "off (CLAUDE_SANDBOX=off)"}\n'
    (tmp_path / "w1.log").write_text(on + '{"event": "job.completed"}\n' + on)
    (tmp_path / "w2.log").write_text(on)
    logs = {"w1": tmp_path / "w1.log", "w2": tmp_path / "w2.log"}
    result = check_landlock(logs)
    assert result.ok
    assert result.detail == "3 worker starts, 0 without Landlock"
    (tmp_path / "w2.log").write_text(on + off)
    assert not check_landlock(logs).ok
    assert not check_landlock({"w9": tmp_path / "missing.log"}).ok
