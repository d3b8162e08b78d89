"""Every failure text the pinned Claude CLI is known to print (worker/claude-cli.lock), and the
result shapes."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from fondation_worker.classify import (
    DEFAULT_USAGE_LIMIT_RETRY_MS,
    ClaudeRun,
    classify,
    parse_reset_time,
    parse_result,
)

NOW = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)

# The real output of the pinned CLI (worker/claude-cli.lock) without credentials.
NOT_LOGGED_IN = {
    "type": "result",
    "subtype": "success",
    "is_error": True,
    "num_turns": 1,
    "result": "Not logged in · Please run /login",
    "terminal_reason": "api_error",
    "api_error_status": None,
    "total_cost_usd": 0,
    "duration_ms": 310,
    "session_id": "da74c049-58ea-425f-bb4c-a3df4aa04dad",
}


def result_json(text: str, **extra: Any) -> str:
    data = {"type": "result", "subtype": "success", "is_error": True, "result": text}
    data.update(extra)
    return json.dumps(data)


def run(stdout: str = "", stderr: str = "", code: int | None = 1, **kw: Any) -> ClaudeRun:
    return ClaudeRun(exit_code=code, stdout_tail=stdout, stderr_tail=stderr, **kw)


def test_success() -> None:
    out = json.dumps(
        {
            "type": "result",
            "subtype": "success",
            "is_error": False,
            "result": "ok",
            "total_cost_usd": 0.5,
        }
    )
    verdict = classify(run(out, code=0), NOW)
    assert verdict.kind == "ok"
    assert verdict.result is not None
    assert verdict.result.total_cost_usd == 0.5


def test_real_not_logged_in_output_is_auth() -> None:
    verdict = classify(run(json.dumps(NOT_LOGGED_IN)), NOW)
    assert verdict.kind == "auth"
    assert "Not logged in" in verdict.reason


AUTH_TEXTS = [
    "Not logged in · Please run /login",
    "Please run /login",
    "Invalid API key · Please run /login",
    "OAuth token has expired. Please obtain a new token or refresh your existing token.",
    "OAuth token revoked · Please run /login",
    "Login expired · Please run /login",
    'API Error: 401 {"type":"error","error":{"type":"authentication_error"}}',
    "authentication_failed",
    "Could not resolve authentication method. Expected either apiKey or authToken to be set.",
]


@pytest.mark.parametrize("text", AUTH_TEXTS)
def test_auth_texts_in_result(text: str) -> None:
    assert classify(run(result_json(text)), NOW).kind == "auth"


@pytest.mark.parametrize("text", AUTH_TEXTS)
def test_auth_texts_on_stderr_without_json(text: str) -> None:
    assert classify(run("", text), NOW).kind == "auth"


@pytest.mark.parametrize("status", [401, 403])
def test_auth_by_api_error_status(status: int) -> None:
    assert classify(run(result_json("API Error", api_error_status=status)), NOW).kind == "auth"


USAGE_TEXTS = [
    "You've hit your session limit · resets 4:20am (Europe/Warsaw)",
    "You've hit your limit · resets 3:30am (Asia/Calcutta)",
    "You've reached your weekly limit · resets Oct 9, 10am",
    "Claude usage limit reached. Your limit will reset at 3pm (America/Bogota).",
    "Claude AI usage limit reached|1773151200",
    "5-hour limit reached ∙ resets 3pm",
]


@pytest.mark.parametrize("text", USAGE_TEXTS)
def test_usage_limit_texts(text: str) -> None:
    verdict = classify(run(result_json(text)), NOW)
    assert verdict.kind == "usage_limit"
    assert verdict.retry_after_ms is not None
    assert verdict.retry_after_ms != DEFAULT_USAGE_LIMIT_RETRY_MS  # a reset time was parsed


def test_usage_limit_by_terminal_reason_without_reset_time() -> None:
    verdict = classify(run(result_json("blocked", terminal_reason="blocking_limit")), NOW)
    assert verdict.kind == "usage_limit"
    assert verdict.retry_after_ms == DEFAULT_USAGE_LIMIT_RETRY_MS


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "resets 4:20am (Europe/Warsaw)",
            datetime(2026, 3, 11, 4, 20, tzinfo=ZoneInfo("Europe/Warsaw")),
        ),
        (
            "resets 3pm (America/Bogota)",
            datetime(2026, 3, 10, 15, 0, tzinfo=ZoneInfo("America/Bogota")),
        ),
        (
            "Your limit will reset at 3pm (America/Bogota).",
            datetime(2026, 3, 10, 15, 0, tzinfo=ZoneInfo("America/Bogota")),
        ),
        ("resets 1pm", datetime(2026, 3, 10, 13, 0, tzinfo=UTC)),
        ("resets 11am", datetime(2026, 3, 11, 11, 0, tzinfo=UTC)),  # already past today
        (
            "resets 12:50am (America/Los_Angeles)",
            datetime(2026, 3, 11, 0, 50, tzinfo=ZoneInfo("America/Los_Angeles")),
        ),
        ("resets Oct 9, 10am", datetime(2026, 10, 9, 10, 0, tzinfo=UTC)),
        ("resets Jan 2 at 9am", datetime(2027, 1, 2, 9, 0, tzinfo=UTC)),
        ("usage limit reached|1773151200", datetime.fromtimestamp(1773151200, tz=UTC)),
        ("resets at 2026-03-10T18:00:00Z", datetime(2026, 3, 10, 18, 0, tzinfo=UTC)),
        ("resets 14:30", datetime(2026, 3, 10, 14, 30, tzinfo=UTC)),
    ],
)
def test_reset_time_parsing(text: str, expected: datetime) -> None:
    assert parse_reset_time(text, NOW) == expected


@pytest.mark.parametrize("text", ["no time here", "resets 5", "resets 25:00", "resets 13pm"])
def test_reset_time_unparseable(text: str) -> None:
    assert parse_reset_time(text, NOW) is None


def test_reset_time_unknown_zone_falls_back_to_local() -> None:
    got = parse_reset_time("resets 3pm (Mars/Olympus)", NOW)
    assert got == datetime(2026, 3, 10, 15, 0, tzinfo=UTC)


def test_usage_retry_after_is_bounded() -> None:
    just_before = NOW - timedelta(seconds=30)
    verdict = classify(run(result_json("usage limit · resets 12pm")), just_before)
    assert verdict.retry_after_ms == 60_000  # 30 s away: at least a minute
    far = classify(run(result_json("usage limit · resets at 2027-12-01T00:00:00Z")), NOW)
    assert far.retry_after_ms == 8 * 24 * 3600 * 1000


TRANSIENT = [
    result_json("API Error: 529 Overloaded", api_error_status=529),
    result_json(
        'API Error: 500 {"type":"error","error":{"type":"api_error"}}', api_error_status=500
    ),
    result_json("API Error: 429 rate_limit_error", api_error_status=429),
    result_json("Request timed out."),
    result_json("API Error: Unable to connect to API (ECONNRESET)"),
    result_json("Something odd happened", subtype="error_during_execution"),
]


@pytest.mark.parametrize("stdout", TRANSIENT)
def test_transient(stdout: str) -> None:
    assert classify(run(stdout), NOW).kind == "transient"


def test_killed_by_our_timeout_is_transient_and_marked() -> None:
    verdict = classify(run("", "", code=-15, timed_out=True), NOW)
    assert verdict.kind == "transient"
    assert verdict.timed_out


def test_crash_without_result_is_transient() -> None:
    verdict = classify(run("", "Traceback...\nRuntimeError: boom", code=1), NOW)
    assert verdict.kind == "transient"
    assert "exit code 1" in verdict.reason


def test_killed_by_a_signal_is_transient() -> None:
    verdict = classify(run("", "", code=-9), NOW)
    assert verdict.kind == "transient"
    assert "signal 9" in verdict.reason


@pytest.mark.parametrize(
    "stdout",
    [
        json.dumps({"type": "result", "subtype": "error_max_turns", "is_error": True}),
        json.dumps({"type": "result", "subtype": "error_max_budget_usd", "is_error": True}),
        json.dumps({"type": "result", "subtype": "error_max_turns", "is_error": False}),
        result_json("Prompt is too long"),
    ],
)
def test_permanent(stdout: str) -> None:
    assert classify(run(stdout), NOW).kind == "permanent"


@pytest.mark.parametrize(
    "stderr",
    [
        "error: unknown option '--bogus-flag'",
        "error: option '--max-turns <turns>' argument missing",
    ],
)
def test_invalid_flags_are_permanent(stderr: str) -> None:
    # Exact texts printed by the pinned CLI.
    assert classify(run("", stderr, code=1), NOW).kind == "permanent"


def test_output_too_large_is_permanent() -> None:
    assert classify(run("y" * 100, code=-9, output_too_large=True), NOW).kind == "permanent"


def test_exit_zero_without_json_is_not_ok() -> None:
    assert classify(run("plain text", code=0), NOW).kind == "transient"


def test_auth_wins_over_usage_and_transient() -> None:
    text = "Invalid API key · Please run /login (usage limit, 529 Overloaded)"
    assert classify(run(result_json(text)), NOW).kind == "auth"


def test_parse_result_takes_the_last_result_line_of_stream_json() -> None:
    lines = [
        json.dumps({"type": "system", "subtype": "init"}),
        json.dumps({"type": "assistant"}),
        json.dumps({"type": "result", "subtype": "success", "is_error": False, "result": "x"}),
    ]
    parsed = parse_result("\n".join(lines))
    assert parsed is not None
    assert parsed.result == "x"


def test_parse_result_ignores_garbage() -> None:
    assert parse_result("not json\n{broken") is None
    assert parse_result('{"type": "assistant"}') is None
