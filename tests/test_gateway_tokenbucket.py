"""limits.TokenBucket: ``rate`` messages a second on average, ``burst`` at once (the caller passes the time)."""

from __future__ import annotations

import pytest

from synk.gateway.limits import TokenBucket


def test_burst_then_refused() -> None:
    b = TokenBucket(rate=5, burst=5, now=100.0)
    assert [b.take(100.0) for _ in range(7)] == [True] * 5 + [False] * 2


def test_refills_at_rate() -> None:
    b = TokenBucket(rate=10, burst=2, now=0.0)
    assert b.take(0.0) and b.take(0.0)
    assert not b.take(0.0)
    assert not b.take(0.05)  # half a token
    assert b.take(0.1)  # the second half arrived
    assert not b.take(0.1)


def test_never_above_burst() -> None:
    b = TokenBucket(rate=1000, burst=3, now=0.0)
    assert [b.take(3600.0) for _ in range(5)] == [True, True, True, False, False]


def test_refused_messages_cost_nothing() -> None:
    b = TokenBucket(rate=1, burst=1, now=0.0)
    assert b.take(0.0)
    for t in (0.1, 0.2, 0.3, 0.9):
        assert not b.take(t)
    assert b.take(1.0)


def test_average_rate_over_time() -> None:
    b = TokenBucket(rate=50, burst=10, now=0.0)
    taken = sum(b.take(i * 0.001) for i in range(10_000))  # 10 s, 1,000 tries a second
    assert taken == pytest.approx(10 + 50 * 10, abs=2)


def test_fractional_rate() -> None:
    b = TokenBucket(rate=0.5, burst=1, now=0.0)
    assert b.take(0.0)
    assert not b.take(1.9)
    assert b.take(2.0)
