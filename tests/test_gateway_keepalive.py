"""The keepalive schedule (pure): fed times and pongs, compared with the pings and drops it answers."""

from __future__ import annotations

import pytest

from synk.gateway.keepalive import Keepalive


def run(k: Keepalive[str], until: float, answers: dict[str, bool], step: float = 0.25) -> list[tuple[float, str, str]]:
    """Tick every ``step`` up to ``until``; each ping answered as ``answers`` says. The events, in order."""
    events: list[tuple[float, str, str]] = []
    now = 0.0
    while now <= until:
        ping, late = k.tick(now, lambda c, token: answers[c] and token == c.encode())
        events += [(now, "drop", c) for c in late]
        for c in ping:
            events.append((now, "ping", c))
            k.pinged(c, c.encode(), now)
        now += step
    return events


def test_each_connection_is_pinged_once_an_interval_and_a_mute_one_dropped_after_the_timeout() -> None:
    k: Keepalive[str] = Keepalive(interval=1.0, timeout=0.5)
    k.add("a", 0.0)
    k.add("b", 0.5)
    events = run(k, 3.0, {"a": True, "b": False})
    assert events == [
        (1.0, "ping", "a"),
        (1.5, "ping", "b"),
        (2.0, "drop", "b"),  # its pong was due at 2.0
        (2.0, "ping", "a"),
        (3.0, "ping", "a"),
    ]
    assert len(k) == 1


def test_a_removed_connection_is_neither_pinged_nor_dropped() -> None:
    k: Keepalive[str] = Keepalive(interval=1.0, timeout=0.5)
    k.add("a", 0.0)
    k.add("b", 0.0)
    never = lambda _c, _t: False  # noqa: E731
    assert k.tick(1.0, never) == (["a", "b"], [])
    k.pinged("a", b"a", 1.0)
    k.remove("a")
    k.remove("b")
    assert k.tick(5.0, never) == ([], [])
    assert len(k) == 0


def test_without_a_timeout_nobody_is_dropped() -> None:
    k: Keepalive[str] = Keepalive(interval=1.0, timeout=None)
    k.add("a", 0.0)
    assert [e for e in run(k, 4.0, {"a": False}) if e[1] == "drop"] == []


def test_the_interval_must_be_positive() -> None:
    with pytest.raises(ValueError, match="positive, got 0"):
        Keepalive(interval=0, timeout=None)
