"""The one place milliseconds become seconds and back.

Every duration the worker is configured with is in milliseconds (``*_MS`` in the environment,
``*_ms`` in code); the clocks, sleeps and subprocess timeouts it feeds take seconds. Code turns
one into the other only through these two functions, so a grep for ``seconds(`` finds every
crossing.
"""

from __future__ import annotations

MS_PER_S = 1000


def seconds(ms: float) -> float:
    """``ms`` milliseconds in seconds."""
    return ms / MS_PER_S


def milliseconds(s: float) -> int:
    """``s`` seconds in whole milliseconds (rounded down)."""
    return int(s * MS_PER_S)
