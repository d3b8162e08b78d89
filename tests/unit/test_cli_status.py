"""``fondation-worker status`` (a table; ``--json`` unchanged) and ``enqueue --dedupe-key``
against a fake Convex HTTP API. The metrics shape is ``metrics:queue``'s (convex/metrics.ts,
docs/CONTRACT.md)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from typer.testing import CliRunner

from fondation_worker import cli
from fondation_worker.cli import render
from tests.support.fakes.convex_api import FakeConvex

TOKEN = "cli-unit-test-token-0123456789"
OPERATOR = "cli-unit-test-operator-0123456789"

METRICS: dict[str, Any] = {
    "now": 1_767_000_000_000,
    "counts": {
        "pending": 3,
        "assigned": 1,
        "claimed": 1,
        "running": 2,
        "completed": 120,
        "failed": 0,
        "dead": 1,
        "canceled": 0,
    },
    "ready": 2,
    "scheduled": 1,
    "inProgress": 4,
    "idleSlots": 7,
    "oldestReadyAgeMs": 245_000,
    "oldestExpiredLeaseAgeMs": None,
    "lastHour": {
        "completed": 4,
        "failed": 0,
        "dead": 0,
        "canceled": 0,
        "successRate": 1,
        "avgDurationMs": 750_000,
        "p95DurationMs": 1_200_000,
        "jobsWithDroppedDocs": 0,
        "droppedDocs": 0,
    },
    "lastDay": {
        "completed": 120,
        "failed": 3,
        "dead": 1,
        "canceled": 0,
        "successRate": 120 / 121,
        "avgDurationMs": 842_000,
        "p95DurationMs": 2 * 3_600_000 + 5 * 60_000,
        "jobsWithDroppedDocs": 1,
        "droppedDocs": 3,
    },
}

EMPTY_WINDOW: dict[str, Any] = {
    "completed": 0,
    "failed": 0,
    "dead": 0,
    "canceled": 0,
    "successRate": None,
    "avgDurationMs": None,
    "p95DurationMs": None,
    "jobsWithDroppedDocs": 0,
    "droppedDocs": 0,
}


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> FakeConvex:
    fake = FakeConvex(TOKEN, OPERATOR, METRICS["now"])
    fake.metrics = METRICS
    for name, value in {
        "CONVEX_URL": "http://127.0.0.1:3999",
        "WORKER_TOKEN": TOKEN,
        "TEMP_DIR": str(tmp_path / "tmp"),
    }.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("OPERATOR_TOKEN", raising=False)
    fake.install(monkeypatch)
    return fake


def run(*args: str) -> Any:
    return CliRunner().invoke(cli.app, list(args))


def cells(line: str) -> list[str]:
    """A table row split on its column gaps (two spaces or more)."""
    return [c for c in line.strip().split("  ") if c.strip()]


def rows(lines: list[str]) -> dict[str, list[str]]:
    return {cells(line)[0].strip(): [c.strip() for c in cells(line)[1:]] for line in lines if line}


# --- the rendering -----------------------------------------------------------------------


def test_counts_come_first_then_the_hour_and_day_side_by_side() -> None:
    lines = render.render_status(METRICS)
    blank = lines.index("")
    queue, windows = lines[:blank], lines[blank + 1 :]
    assert cells(queue[0]) == ["QUEUE", "NOW"]
    assert [cells(line)[0].strip() for line in queue[1:9]] == [
        "pending",
        "assigned",
        "claimed",
        "running",
        "completed",
        "failed",
        "dead",
        "canceled",
    ]
    assert rows(queue)["completed"] == ["120"]
    assert rows(queue)["in progress"] == ["4"]
    assert rows(queue)["idle worker slots"] == ["7"]
    assert cells(windows[0]) == ["OUTCOMES", "LAST HOUR", "LAST DAY"]
    table = rows(windows)
    assert table["completed"] == ["4", "120"]
    assert table["failed (will retry)"] == ["0", "3"]
    assert table["dead"] == ["0", "1"]
    assert table["docs left out"] == ["0", "3"]
    assert table["jobs that left docs out"] == ["0", "1"]


def test_durations_and_rates_are_humanised() -> None:
    lines = render.render_status(METRICS)
    table = rows(lines)
    assert table["oldest ready job waiting"] == ["4m 05s"]
    assert table["oldest expired lease"] == ["-"]  # null: no expired lease
    assert table["average duration"] == ["12m 30s", "14m 02s"]
    assert table["p95 duration"] == ["20m 00s", "2h 05m"]
    assert table["success rate"] == ["100.0%", "99.2%"]
    assert "245000" not in "\n".join(lines)  # no raw milliseconds


def test_figures_line_up_in_columns() -> None:
    printed = render.render_status(METRICS)
    lines = [line for line in printed if line]
    # Every figure ends at its column's right edge: the lines of a table have one length.
    blank = printed.index("")
    queue, windows = printed[:blank], printed[blank + 1 :]
    assert len({len(line) for line in queue}) == 1, queue
    assert len({len(line) for line in windows}) == 1, windows
    # One label column for both tables, as wide as the longest label, then the gap.
    width = len("oldest ready job waiting")
    assert all(line[width : width + 2] == "  " for line in lines), lines


def test_an_empty_queue_and_missing_fields_show_dashes() -> None:
    empty = {
        **METRICS,
        "counts": dict.fromkeys(METRICS["counts"], 0),
        "oldestReadyAgeMs": None,
        "lastHour": EMPTY_WINDOW,
        "lastDay": EMPTY_WINDOW,
    }
    table = rows(render.render_status(empty))
    assert table["success rate"] == ["-", "-"]
    assert table["average duration"] == ["-", "-"]
    assert table["oldest ready job waiting"] == ["-"]
    assert table["pending"] == ["0"]
    # A reply without a field (an older deployment) is still a table, not a traceback.
    table = rows(render.render_status({"counts": {"pending": 1}}))
    assert table["pending"] == ["1"]
    assert table["completed"] == ["-", "-"]


# --- the command ------------------------------------------------------------------------


def test_status_prints_the_table(fake: FakeConvex) -> None:
    result = run("status")
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == render.render_status(METRICS)
    assert fake.calls == [("metrics:queue", {"token": TOKEN})]
    assert TOKEN not in result.output


def test_status_json_is_unchanged(fake: FakeConvex) -> None:
    result = run("status", "--json")
    assert result.exit_code == 0, result.output
    assert result.stdout == json.dumps(METRICS, indent=2, sort_keys=True) + "\n"


# --- enqueue --dedupe-key (the make deploy demo re-attaches to its job) ------------------


def test_enqueue_with_a_dedupe_key_reuses_the_active_job(
    fake: FakeConvex, monkeypatch: pytest.MonkeyPatch
) -> None:
    # enqueue is an operator command: it needs OPERATOR_TOKEN (issue 15, fail-closed).
    refused = run("enqueue", "https://github.com/octocat/Hello-World")
    assert refused.exit_code == 2
    assert "OPERATOR_TOKEN" in refused.output
    monkeypatch.setenv("OPERATOR_TOKEN", OPERATOR)
    repo = "https://github.com/octocat/Hello-World"
    first = run("enqueue", repo, "--dedupe-key", "demo-hello-world")
    assert first.exit_code == 0, first.output
    job_id = first.stdout.split()[1]
    assert first.stdout.strip() == f"job {job_id} queued"
    again = run("enqueue", repo, "--dedupe-key", "demo-hello-world")
    assert again.stdout.strip() == f"job {job_id} already queued"
    assert [args.get("dedupeKey") for path, args in fake.calls if path == "jobs:enqueue"] == [
        "demo-hello-world",
        "demo-hello-world",
    ]
    plain = run("enqueue", repo)
    assert "dedupeKey" not in fake.calls[-1][1]
    assert plain.stdout.split()[1] != job_id
