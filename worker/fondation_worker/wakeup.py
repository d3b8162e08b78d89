"""The wake path: ``jobs:assignments`` subscribed over Convex's WebSocket sync protocol.

The query answers this worker's slots as the dispatcher sees them (offered and idle, or
assigned a job to accept); Convex pushes a new answer whenever they change, so the loop
accepts an assignment within a round trip of the dispatch and sleeps with no HTTP calls in
between. A dispatch re-runs this one worker's query, not the fleet's. A lean client of the
protocol's
subset we need, on the ``websockets`` library (pure Python, no dependency): Connect, one
ModifyQuerySet adding the query, then Transitions and Pings from the server. The wire
formats are those of Convex's own clients (convex-js ``src/browser/sync/protocol.ts``,
convex-rs ``sync_types``).

The subscription is an optimisation, never a requirement: while it is down (no connection,
no message for ``INACTIVITY_S``, the query refused) ``state().live`` is False and the
scheduler polls over HTTP as it always did; this thread reconnects with a jittered
exponential back-off. The worker token travels in the query's arguments inside the
socket's messages, never in the URL, and no message is logged.
"""

from __future__ import annotations

import json
import random
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from pydantic import SecretStr, ValidationError
from websockets.exceptions import WebSocketException
from websockets.sync.client import ClientConnection, connect

from .backoff import retry_delay_s
from .logging_setup import get_logger
from .metrics import Metrics
from .models import Assignments, SlotView
from .units import milliseconds

log = get_logger(__name__)

WAKEUP_QUERY = "jobs:assignments"
QUERY_ID = 0
# Convex's Rust client gives up on a server silent for 30 s (the server Pings well within).
INACTIVITY_S = 30.0
OPEN_TIMEOUT_S = 10.0
RECONNECT_BASE_S = 1.0
RECONNECT_MAX_S = 30.0
MAX_MESSAGE_BYTES = 1 << 20


@dataclass(frozen=True)
class WakeState:
    """What the subscription says now. ``version`` changes with every new answer or state."""

    live: bool
    slots: tuple[SlotView, ...] | None  # this worker's slots (None: no answer while down)
    version: int
    down_reason: str | None
    down_since: float | None  # wall time the subscription went (or started) down


class WakeSource(Protocol):
    def start(self, on_change: Callable[[], None]) -> None: ...

    def stop(self) -> None: ...

    def state(self) -> WakeState: ...


class WakeupError(Exception):
    """The session ended for a reason worth reporting (never includes a message's text)."""


def sync_url(convex_url: str) -> str:
    """``https://x.convex.cloud`` -> ``wss://x.convex.cloud/api/sync`` (Convex's Rust client)."""
    if convex_url.startswith("https://"):
        return "wss://" + convex_url[len("https://") :].rstrip("/") + "/api/sync"
    if convex_url.startswith("http://"):
        return "ws://" + convex_url[len("http://") :].rstrip("/") + "/api/sync"
    raise ValueError("CONVEX_URL must be http(s)")


class WakeupSubscription:
    """A background thread holding the subscription; ``state()`` is safe from any thread."""

    def __init__(
        self,
        convex_url: str,
        token: SecretStr,
        worker_id: str,
        metrics: Metrics,
        *,
        inactivity_s: float = INACTIVITY_S,
        reconnect_max_s: float = RECONNECT_MAX_S,
        rand: Callable[[], float] = random.random,
    ) -> None:
        self._url = sync_url(convex_url)
        self._token = token
        self._worker_id = worker_id
        self._metrics = metrics
        self._inactivity_s = inactivity_s
        self._reconnect_max_s = reconnect_max_s
        self._rand = rand
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._ws: ClientConnection | None = None
        self._thread: threading.Thread | None = None
        self._on_change: Callable[[], None] = lambda: None
        self._session_id = str(uuid.uuid4())
        self._connections = 0
        self._last_close: str | None = None
        self._state = WakeState(False, None, 0, "not connected yet", time.time())
        metrics.wakeup_subscribed.set(0)

    # --- public ---------------------------------------------------------------------

    def start(self, on_change: Callable[[], None]) -> None:
        self._on_change = on_change
        self._thread = threading.Thread(target=self._run, name="wakeup", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        with self._lock:
            ws = self._ws
        if ws is not None:
            ws.close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def state(self) -> WakeState:
        with self._lock:
            return self._state

    # --- state changes ----------------------------------------------------------------

    def _set(self, *, live: bool, slots: tuple[SlotView, ...] | None, reason: str | None) -> None:
        with self._lock:
            old = self._state
            if (old.live, old.slots, old.down_reason) == (live, slots, reason):
                return
            down_since = None if live else (old.down_since if not old.live else time.time())
            self._state = WakeState(live, slots, old.version + 1, reason, down_since)
        if live and not old.live:
            down_s = time.time() - old.down_since if old.down_since is not None else 0.0
            self._metrics.wakeup_subscribed.set(1)
            self._metrics.wakeup_down_seconds.inc(down_s)
            log.info("wakeup.subscribed", down_s=round(down_s, 3))
        elif old.live and not live:
            self._metrics.wakeup_subscribed.set(0)
            log.warning("wakeup.down", reason=reason, fallback="HTTP polling")
        self._on_change()

    # --- the thread -----------------------------------------------------------------

    def _run(self) -> None:
        failures = 0
        while not self._stop.is_set():
            reason = "connection closed"
            try:
                was_live = self._session()
            except WakeupError as exc:
                reason, was_live = str(exc), self.state().live
            except (OSError, WebSocketException, TimeoutError) as exc:
                reason, was_live = f"{type(exc).__name__}: {exc}"[:300], self.state().live
            if self._stop.is_set():
                break
            self._last_close = reason[:100]
            self._set(live=False, slots=None, reason=reason)
            failures = 1 if was_live else failures + 1
            delay = retry_delay_s(failures, RECONNECT_BASE_S, self._reconnect_max_s, self._rand())
            log.debug("wakeup.reconnect_in", delay_s=round(delay, 2), reason=reason)
            self._stop.wait(delay)
        with self._lock:
            self._ws = None

    def _session(self) -> bool:
        """One connection; returns (or raises) when it ends. True if it got an answer."""
        live = False
        with connect(
            self._url,
            open_timeout=OPEN_TIMEOUT_S,
            close_timeout=2,
            ping_interval=10,
            ping_timeout=10,
            max_size=MAX_MESSAGE_BYTES,
        ) as ws:
            with self._lock:
                self._ws = ws
            if self._stop.is_set():
                return False
            self._metrics.wakeup_connects.inc()
            self._send(
                ws,
                {
                    "type": "Connect",
                    "sessionId": self._session_id,
                    "connectionCount": self._connections,
                    "lastCloseReason": self._last_close,
                    "clientTs": milliseconds(time.time()),
                },
            )
            self._connections += 1
            self._send(
                ws,
                {
                    "type": "ModifyQuerySet",
                    "baseVersion": 0,
                    "newVersion": 1,
                    "modifications": [
                        {
                            "type": "Add",
                            "queryId": QUERY_ID,
                            "udfPath": WAKEUP_QUERY,
                            "args": [
                                {
                                    "token": self._token.get_secret_value(),
                                    "workerId": self._worker_id,
                                }
                            ],
                        }
                    ],
                },
            )
            while not self._stop.is_set():
                try:
                    text = ws.recv(timeout=self._inactivity_s)
                except TimeoutError:
                    raise WakeupError(
                        f"no message from Convex for {self._inactivity_s:.0f} s"
                    ) from None
                answer = self._handle(text)
                if answer is not None:
                    live = True
                    self._set(live=True, slots=answer.slots, reason=None)
        return live

    @staticmethod
    def _send(ws: ClientConnection, message: dict[str, Any]) -> None:
        ws.send(json.dumps(message))

    def _handle(self, text: str | bytes) -> Assignments | None:
        """The new answer a server message carries, if any; raises when the session is over."""
        try:
            message = json.loads(text)
        except ValueError:
            raise WakeupError("a message from Convex is not JSON") from None
        kind = message.get("type") if isinstance(message, dict) else None
        if kind == "Transition":
            answer: Assignments | None = None
            for mod in message.get("modifications") or []:
                if not isinstance(mod, dict) or mod.get("queryId") != QUERY_ID:
                    continue
                if mod.get("type") == "QueryUpdated":
                    try:
                        answer = Assignments.model_validate(mod.get("value"))
                    except ValidationError:
                        raise WakeupError(f"{WAKEUP_QUERY} answered an unexpected value") from None
                elif mod.get("type") == "QueryFailed":
                    data = mod.get("errorData")
                    code = data.get("code") if isinstance(data, dict) else None
                    raise WakeupError(f"{WAKEUP_QUERY} failed: {code or 'error'}")
            return answer
        if kind in ("Ping", "MutationResponse", "ActionResponse", "TransitionChunk"):
            return None
        if kind in ("FatalError", "AuthError"):
            raise WakeupError(f"Convex sent {kind}")
        raise WakeupError(f"unexpected message type {kind!r}")
