"""A clock the test drives: ``wait`` advances time instead of sleeping."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta


class FakeClock:
    def __init__(self, start: float = 1000.0) -> None:
        self.t = start
        self._lock = threading.Lock()

    def monotonic(self) -> float:
        return self.t

    def time(self) -> float:
        return 1_773_000_000.0 + self.t

    def now(self) -> datetime:
        return datetime(2026, 3, 10, tzinfo=UTC) + timedelta(seconds=self.t)

    def advance(self, seconds: float) -> None:
        with self._lock:
            self.t += seconds

    def wait(self, event: threading.Event, timeout: float) -> bool:
        if event.is_set():
            return True
        self.advance(max(0.0, timeout))
        time.sleep(0)
        return event.is_set()
