"""Pure back-off policies: idle polling and call retries.

No clock and no global random state: callers pass ``rand`` (a float in [0, 1)).
"""

from __future__ import annotations

import math

IDLE_JITTER = 0.05


def idle_poll_delay_ms(
    empty_polls: int, base_ms: int, max_ms: int, rand: float, jitter: float = IDLE_JITTER
) -> int:
    """Delay before the next claim attempt.

    ``empty_polls`` is how many polls in a row found no job (0 right after work was found).
    The delay is ``base_ms`` while work is found and doubles per empty poll up to ``max_ms``.
    Jitter only shortens the delay (by up to ``jitter``), so several workers do not poll in
    lock step and ``max_ms`` stays a true ceiling.
    """
    if base_ms <= 0 or max_ms < base_ms:
        raise ValueError("need 0 < base_ms <= max_ms")
    if not 0.0 <= rand <= 1.0:
        raise ValueError("rand must be in [0, 1]")
    exponent = max(0, empty_polls - 1) if empty_polls > 0 else 0
    exponent = min(exponent, 32)
    raw = min(float(max_ms), base_ms * math.pow(2.0, exponent))
    delay = raw * (1.0 - jitter * rand)
    return int(max(1.0, delay))


def retry_delay_s(attempt: int, base_s: float, max_s: float, rand: float) -> float:
    """Delay before retry number ``attempt`` (1-based) of a failed call.

    Exponential with "equal jitter": half fixed, half random, so retries spread out
    but never collapse to zero.
    """
    if attempt < 1:
        raise ValueError("attempt is 1-based")
    if base_s <= 0 or max_s < base_s:
        raise ValueError("need 0 < base_s <= max_s")
    if not 0.0 <= rand <= 1.0:
        raise ValueError("rand must be in [0, 1]")
    capped = min(max_s, base_s * math.pow(2.0, min(attempt - 1, 32)))
    return capped / 2.0 + (capped / 2.0) * rand


def idle_calls_per_hour(max_ms: int, jitter: float = IDLE_JITTER) -> float:
    """Worst-case claim calls per hour once the idle back-off has reached its ceiling."""
    return 3_600_000 / (max_ms * (1.0 - jitter))
