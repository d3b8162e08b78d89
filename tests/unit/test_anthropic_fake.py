"""The scripted Messages API double itself: both reply formats, errors, the protocol check.

The suites that drive the real CLI with it only ever see streaming replies (the pinned CLI
streams); these checks keep the JSON path and the failure message honest.
"""

from __future__ import annotations

import json

import httpx
import pytest

from tests.support.fakes.anthropic_api import ApiError, FakeAnthropic, Text, ToolUse, Turn, turns

HEADERS = {"anthropic-version": "2023-06-01", "x-api-key": "dummy"}


def body(stream: bool, messages: list[dict[str, object]] | None = None) -> dict[str, object]:
    return {
        "model": "claude-test",
        "max_tokens": 100,
        "stream": stream,
        "tools": [{"name": "Read"}],
        "messages": messages or [{"role": "user", "content": "hi"}],
    }


def test_json_reply_follows_the_script_turn_by_turn() -> None:
    read = ToolUse("Read", {"file_path": "README.md"})
    with FakeAnthropic(turns(Turn([Text("looking"), read]))) as api:
        first = httpx.post(f"{api.url}/v1/messages", json=body(False), headers=HEADERS).json()
        followup = [
            {"role": "user", "content": "hi"},
            {"role": "assistant", "content": first["content"]},
            {
                "role": "user",
                "content": [{"type": "tool_result", "tool_use_id": read.id, "content": "x"}],
            },
        ]
        second = httpx.post(
            f"{api.url}/v1/messages", json=body(False, followup), headers=HEADERS
        ).json()
        api.assert_protocol()
        assert api.main_requests()[1].tool_results()[0]["tool_use_id"] == read.id
        assert "x-api-key" not in api.requests[0].headers  # credentials are not kept
    assert first["stop_reason"] == "tool_use"
    assert first["content"] == [
        {"type": "text", "text": "looking"},
        {"type": "tool_use", "id": read.id, "name": "Read", "input": {"file_path": "README.md"}},
    ]
    assert (second["stop_reason"], second["content"]) == (
        "end_turn",
        [{"type": "text", "text": "done"}],
    )


def test_streamed_reply_is_the_event_sequence() -> None:
    with FakeAnthropic(turns(Turn([ToolUse("Glob", {"pattern": "*"})]))) as api:
        reply = httpx.post(f"{api.url}/v1/messages", json=body(True), headers=HEADERS)
    assert reply.headers["content-type"] == "text/event-stream"
    events = [line[7:] for line in reply.text.splitlines() if line.startswith("event: ")]
    assert events == [
        "message_start",
        "content_block_start",
        "content_block_delta",
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    data = [json.loads(line[6:]) for line in reply.text.splitlines() if line.startswith("data: ")]
    assert json.loads(data[2]["delta"]["partial_json"]) == {"pattern": "*"}
    assert data[4]["delta"]["stop_reason"] == "tool_use"


def test_error_reply_carries_status_body_and_headers() -> None:
    error = ApiError(429, "rate_limit_error", "slow down", {"retry-after": "7"})
    with FakeAnthropic(turns(error)) as api:
        reply = httpx.post(f"{api.url}/v1/messages", json=body(True), headers=HEADERS)
    assert reply.status_code == 429
    assert reply.headers["retry-after"] == "7"
    assert reply.json() == {
        "type": "error",
        "error": {"type": "rate_limit_error", "message": "slow down"},
    }


def test_a_changed_protocol_fails_with_a_clear_message() -> None:
    with FakeAnthropic() as api:
        httpx.post(f"{api.url}/v1/messages", json={"messages": []}, headers={"x-api-key": "k"})
        with pytest.raises(AssertionError, match="protocol changed") as info:
            api.assert_protocol()
    assert "anthropic-version" in str(info.value)
    assert "'model'" in str(info.value)
    with FakeAnthropic() as quiet, pytest.raises(AssertionError, match="never called POST"):
        quiet.assert_protocol()
