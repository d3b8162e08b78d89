"""A scripted stand-in of the Anthropic Messages API, on loopback, for the REAL ``claude`` CLI.

This is the one double at the outer boundary: the pinned CLI binary runs for real (its
permission engine, its tools, its retries) and talks to this server through
``ANTHROPIC_BASE_URL`` with a dummy ``ANTHROPIC_API_KEY``. A test scripts the model turn by
turn: text, ``tool_use`` blocks, stop reasons, or an HTTP error reply. Replies are streamed
as server-sent events when the request asks for ``stream`` and sent as one JSON message
otherwise. Every request is recorded, so a test can read the ``tool_result`` blocks the CLI
sent back.

The server checks the shape of what it receives against what the pinned CLI (worker/claude-cli.lock)
was measured to send. Anything else is recorded in ``protocol_problems``; ``assert_protocol``
turns them into one clear failure ("the pinned CLI's protocol changed"), so a CLI upgrade
that breaks the double cannot pass as a green test.
"""

from __future__ import annotations

import itertools
import json
import sys
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

MESSAGES_PATH = "/v1/messages"
# Request fields a Messages call of the pinned CLI must carry.
REQUIRED_FIELDS = ("model", "messages", "max_tokens")
KNOWN_BLOCK_TYPES = frozenset(
    {"text", "tool_use", "tool_result", "thinking", "redacted_thinking", "image", "document"}
)
KNOWN_ROLES = frozenset({"user", "assistant", "system"})
_ids = itertools.count(1)


@dataclass(frozen=True)
class Text:
    text: str


@dataclass(frozen=True)
class ToolUse:
    name: str
    input: Mapping[str, Any]
    id: str = field(default_factory=lambda: f"toolu_{next(_ids):06d}")


@dataclass(frozen=True)
class Turn:
    """One assistant message; the stop reason follows from its blocks unless given."""

    blocks: Sequence[Text | ToolUse]
    stop_reason: str | None = None
    output_tokens: int = 10

    @property
    def effective_stop_reason(self) -> str:
        if self.stop_reason is not None:
            return self.stop_reason
        return "tool_use" if any(isinstance(b, ToolUse) for b in self.blocks) else "end_turn"


@dataclass(frozen=True)
class ApiError:
    """An HTTP error reply with Anthropic's error body and optional headers."""

    status: int
    error_type: str
    message: str
    headers: Mapping[str, str] = field(default_factory=dict)


Reply = Turn | ApiError


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    headers: Mapping[str, str]
    body: Any

    @property
    def is_messages(self) -> bool:
        return self.method == "POST" and self.path.split("?")[0] == MESSAGES_PATH

    @property
    def messages(self) -> list[dict[str, Any]]:
        value = self.body.get("messages", []) if isinstance(self.body, dict) else []
        return value if isinstance(value, list) else []

    @property
    def turn_index(self) -> int:
        """How many assistant turns this conversation already had (0 for the first call)."""
        return sum(1 for m in self.messages if m.get("role") == "assistant")

    @property
    def tools(self) -> list[str]:
        tools = self.body.get("tools") or [] if isinstance(self.body, dict) else []
        return [str(t.get("name")) for t in tools if isinstance(t, dict)]

    def user_text(self) -> str:
        """All text the user side sent (the prompt), for scripts that branch on the step."""
        parts: list[str] = []
        for message in self.messages:
            if message.get("role") != "user":
                continue
            content = message.get("content")
            if isinstance(content, str):
                parts.append(content)
            elif isinstance(content, list):
                parts += [str(b.get("text", "")) for b in content if b.get("type") == "text"]
        return "\n".join(parts)

    def tool_results(self) -> list[dict[str, Any]]:
        """The ``tool_result`` blocks of the last user message: what the CLI answered."""
        for message in reversed(self.messages):
            if message.get("role") == "user" and isinstance(message.get("content"), list):
                return [b for b in message["content"] if b.get("type") == "tool_result"]
        return []


Script = Callable[[Request], Reply]


def turns(*replies: Reply, then: Reply | None = None) -> Script:
    """A script that answers turn N of every conversation with ``replies[N]``.

    Stateless on purpose: the turn comes from the request itself, so the CLI's own retries
    and several concurrent conversations all get the right reply.
    """
    final = then or Turn([Text("done")])

    def script(request: Request) -> Reply:
        index = request.turn_index
        return replies[index] if index < len(replies) else final

    return script


def tool_result_text(block: Mapping[str, Any]) -> str:
    content = block.get("content")
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(str(c.get("text", "")) for c in content if isinstance(c, dict))
    return ""


def _sse(event: str, data: Mapping[str, Any]) -> bytes:
    return f"event: {event}\ndata: {json.dumps(data)}\n\n".encode()


def _block_json(block: Text | ToolUse) -> dict[str, Any]:
    if isinstance(block, Text):
        return {"type": "text", "text": block.text}
    return {"type": "tool_use", "id": block.id, "name": block.name, "input": dict(block.input)}


def stream_events(turn: Turn, model: str, message_id: str) -> bytes:
    """The event sequence of one streamed assistant message."""
    start: dict[str, Any] = {
        "id": message_id,
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": [],
        "stop_reason": None,
        "stop_sequence": None,
        "usage": {"input_tokens": 20, "output_tokens": 1},
    }
    out = [_sse("message_start", {"type": "message_start", "message": start})]
    for index, block in enumerate(turn.blocks):
        if isinstance(block, Text):
            head: dict[str, Any] = {"type": "text", "text": ""}
            delta: dict[str, Any] = {"type": "text_delta", "text": block.text}
        else:
            head = {"type": "tool_use", "id": block.id, "name": block.name, "input": {}}
            delta = {"type": "input_json_delta", "partial_json": json.dumps(dict(block.input))}
        out.append(
            _sse(
                "content_block_start",
                {"type": "content_block_start", "index": index, "content_block": head},
            )
        )
        out.append(
            _sse(
                "content_block_delta",
                {"type": "content_block_delta", "index": index, "delta": delta},
            )
        )
        out.append(_sse("content_block_stop", {"type": "content_block_stop", "index": index}))
    out.append(
        _sse(
            "message_delta",
            {
                "type": "message_delta",
                "delta": {"stop_reason": turn.effective_stop_reason, "stop_sequence": None},
                "usage": {"output_tokens": turn.output_tokens},
            },
        )
    )
    out.append(_sse("message_stop", {"type": "message_stop"}))
    return b"".join(out)


def protocol_problems_of(request: Request) -> list[str]:
    """What in this request differs from the measured protocol of the pinned CLI."""
    problems: list[str] = []
    if request.method == "POST" and request.path.startswith("/v1/messages"):
        path = request.path.split("?")[0]
        if path.endswith("/count_tokens"):
            return problems
        if path != MESSAGES_PATH:
            return [f"unexpected POST {path}"]
        if request.headers.get("anthropic-version") != "2023-06-01":
            problems.append(f"anthropic-version {request.headers.get('anthropic-version')!r}")
        if not isinstance(request.body, dict):
            return [*problems, "body is not a JSON object"]
        problems += [f"no {name!r} field" for name in REQUIRED_FIELDS if name not in request.body]
        if not isinstance(request.body.get("stream", False), bool):
            problems.append("'stream' is not a boolean")
        for message in request.messages:
            if message.get("role") not in KNOWN_ROLES:
                problems.append(f"message role {message.get('role')!r}")
            content = message.get("content")
            if isinstance(content, list):
                problems += [
                    f"content block type {b.get('type')!r}"
                    for b in content
                    if b.get("type") not in KNOWN_BLOCK_TYPES
                ]
        for result in request.tool_results():
            if "tool_use_id" not in result:
                problems.append("tool_result without tool_use_id")
    return problems


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A CLI killed mid-request (a cancel test) leaves a broken pipe: expected, not news.
        if isinstance(sys.exc_info()[1], ConnectionError):
            return
        super().handle_error(request, client_address)


class FakeAnthropic:
    """The server; use as a context manager. ``script`` may be replaced while it runs."""

    def __init__(
        self, script: Script | None = None, host: str = "127.0.0.1", port: int = 0
    ) -> None:
        self.script: Script = script or turns()
        self.requests: list[Request] = []
        self.protocol_problems: list[str] = []
        self._lock = threading.Lock()
        # Loopback for the tests; `make deploy`'s demo binds the Docker bridge gateway so the
        # worker container on the local target reaches it (scripts/demo_standins.py).
        self._server = _Server((host, port), self._handler())
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def env(self) -> dict[str, str]:
        """What the CLI needs to talk to this server: a dummy key that is no real secret."""
        return {"ANTHROPIC_BASE_URL": self.url, "ANTHROPIC_API_KEY": "sk-ant-api03-" + "x" * 24}

    def __enter__(self) -> FakeAnthropic:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)

    def messages_requests(self) -> list[Request]:
        with self._lock:
            return [r for r in self.requests if r.is_messages]

    def main_requests(self) -> list[Request]:
        """The agent loop's calls (they carry the tool list), not side calls."""
        return [r for r in self.messages_requests() if r.tools]

    def assert_protocol(self) -> None:
        with self._lock:
            problems = list(self.protocol_problems)
            got_messages = any(r.is_messages for r in self.requests)
        if problems:
            raise AssertionError(
                "the pinned claude CLI's protocol changed; the scripted Messages API "
                "(tests/support/fakes/anthropic_api.py) no longer matches it: "
                + "; ".join(problems[:10])
            )
        if not got_messages:
            raise AssertionError(
                "the claude CLI never called POST /v1/messages on ANTHROPIC_BASE_URL: the pinned "
                "CLI's protocol or its base-URL handling changed"
            )

    def _record(self, request: Request) -> None:
        with self._lock:
            self.requests.append(request)
            self.protocol_problems += protocol_problems_of(request)

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                del format, args

            def _read_body(self) -> Any:
                length = int(self.headers.get("content-length") or 0)
                raw = self.rfile.read(length) if length else b""
                try:
                    return json.loads(raw) if raw else None
                except ValueError:
                    return raw.decode("utf-8", "replace")

            def _headers(self) -> dict[str, str]:
                # Credentials are not kept: the records are for assertions and failure output.
                hidden = {"x-api-key", "authorization"}
                return {k.lower(): v for k, v in self.headers.items() if k.lower() not in hidden}

            def _send(
                self, status: int, body: bytes, ctype: str, extra: Mapping[str, str] | None = None
            ) -> None:
                self.send_response(status)
                self.send_header("content-type", ctype)
                self.send_header("content-length", str(len(body)))
                self.send_header("request-id", f"req_fake_{next(_ids):06d}")
                for name, value in (extra or {}).items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self) -> None:
                fake._record(Request("GET", self.path, self._headers(), None))
                self._send(200, b"{}", "application/json")

            def do_POST(self) -> None:
                request = Request("POST", self.path, self._headers(), self._read_body())
                fake._record(request)
                if not request.is_messages:
                    # Side endpoints (token counting, telemetry the env did not switch off).
                    body = b'{"input_tokens": 20}' if "count_tokens" in self.path else b"{}"
                    self._send(200, body, "application/json")
                    return
                try:
                    reply = fake.script(request)
                except Exception as exc:  # a broken script must show, not hang the CLI
                    reply = ApiError(500, "api_error", f"fake script failed: {exc!r}")
                self._reply(request, reply)

            def _reply(self, request: Request, reply: Reply) -> None:
                if isinstance(reply, ApiError):
                    body = {
                        "type": "error",
                        "error": {"type": reply.error_type, "message": reply.message},
                    }
                    self._send(
                        reply.status, json.dumps(body).encode(), "application/json", reply.headers
                    )
                    return
                model = str(request.body.get("model", "claude-test"))
                message_id = f"msg_fake_{next(_ids):06d}"
                if request.body.get("stream"):
                    self._send(200, stream_events(reply, model, message_id), "text/event-stream")
                    return
                message = {
                    "id": message_id,
                    "type": "message",
                    "role": "assistant",
                    "model": model,
                    "content": [_block_json(b) for b in reply.blocks],
                    "stop_reason": reply.effective_stop_reason,
                    "stop_sequence": None,
                    "usage": {"input_tokens": 20, "output_tokens": reply.output_tokens},
                }
                self._send(200, json.dumps(message).encode(), "application/json")

        return Handler


def iter_tool_results(requests: Sequence[Request]) -> Iterator[tuple[str, dict[str, Any]]]:
    """(tool_use_id, block) for every tool_result any request carried, first seen wins."""
    seen: set[str] = set()
    for request in requests:
        for block in request.tool_results():
            tool_id = str(block.get("tool_use_id"))
            if tool_id not in seen:
                seen.add(tool_id)
                yield tool_id, block
