from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fondation_worker.backoff import idle_calls_per_hour, idle_poll_delay_ms, retry_delay_s
from fondation_worker.config import Settings


def test_idle_delay_is_base_while_work_is_found() -> None:
    assert idle_poll_delay_ms(0, 5000, 30000, rand=0.0) == 5000


def test_idle_delay_doubles_then_caps() -> None:
    delays = [idle_poll_delay_ms(n, 5000, 30000, rand=0.0) for n in range(1, 8)]
    assert delays == [5000, 10000, 20000, 30000, 30000, 30000, 30000]


@given(
    n=st.integers(min_value=0, max_value=10_000),
    base=st.integers(min_value=1, max_value=60_000),
    extra=st.integers(min_value=0, max_value=600_000),
    rand=st.floats(min_value=0.0, max_value=1.0),
)
def test_idle_delay_never_exceeds_the_ceiling(n: int, base: int, extra: int, rand: float) -> None:
    ceiling = base + extra
    delay = idle_poll_delay_ms(n, base, ceiling, rand)
    assert 1 <= delay <= ceiling
    assert delay >= int(min(ceiling, base) * 0.95) - 1


def test_default_idle_cost_is_at_most_120_calls_an_hour() -> None:
    # Jitter only shortens the delay, so the default ceiling sits above 30 s to keep even
    # the worst case (every delay shortened the most) within 120 calls an hour.
    default_ceiling = Settings.model_fields["idle_poll_max_ms"].default
    assert idle_calls_per_hour(default_ceiling) <= 120
    assert idle_calls_per_hour(30_000) > 120
    # The first hour, starting from a busy worker, stays close to the ceiling too.
    elapsed, calls, n = 0, 0, 0
    while elapsed < 3_600_000:
        n += 1
        calls += 1
        elapsed += idle_poll_delay_ms(n, 5000, default_ceiling, rand=1.0)
    assert calls <= 124


@given(attempt=st.integers(1, 100), rand=st.floats(0.0, 1.0))
def test_retry_delay_is_bounded_and_never_zero(attempt: int, rand: float) -> None:
    delay = retry_delay_s(attempt, 0.5, 8.0, rand)
    assert 0.25 <= delay <= 8.0


def test_retry_delay_grows() -> None:
    assert retry_delay_s(1, 0.5, 8.0, 0.0) < retry_delay_s(3, 0.5, 8.0, 0.0)


@pytest.mark.parametrize(
    "args",
    [(0, 0.5, 8.0, 0.5), (1, 0.0, 8.0, 0.5), (1, 1.0, 0.5, 0.5), (1, 0.5, 8.0, 1.5)],
)
def test_retry_delay_rejects_nonsense(args: tuple[int, float, float, float]) -> None:
    with pytest.raises(ValueError):
        retry_delay_s(*args)
