"""snapshots: a key's snapshot states and the fair read queue, fed events with no I/O, their output compared."""

from __future__ import annotations

import pytest

from synk.core.messages import encode_add, encode_mod
from synk.gateway import protocol as p
from synk.gateway.routing import Routed, route
from synk.gateway.snapshots import KeyState, ReadQueue, Released, State
from synk.store.base import Stored

K = "k"


def _stored(oid: str, v: int) -> Stored:
    return Stored(oid, "i1", v, encode_add("agent", oid, K, v, {}, inc="i1"))


def _mod(oid: str, v: int, nxt: str | None = None) -> Routed:
    return route(encode_mod("agent", oid, K, v, {"v": v}, next_key=nxt, inc="i1"))


def test_subscribe_read_barrier_live() -> None:
    s = KeyState(K, max_buffer=10)
    epoch = s.snapshot()
    assert (s.state, s.live) == (State.READING, False)
    early, late = _mod("a", 2), _mod("a", 3)
    assert s.message(early) is False
    assert s.read(epoch, [_stored("a", 2)], "t1") is True
    assert s.state is State.BARRIER
    assert s.message(late) is False
    assert len(s) == 2
    assert s.barrier("other") is None  # not the barrier awaited
    assert s.barrier("t1") == Released([_stored("a", 2).record, p.encode_snap(K, ["a"])], [late], frozenset({"a"}))
    assert (s.state, s.live, len(s), s.token) == (State.LIVE, True, 0, None)
    assert s.barrier("t1") is None  # it came back once already
    assert s.message(_mod("a", 4)) is False  # live messages are not the state's to hold
    assert len(s) == 0


def test_a_snapshot_started_over_refuses_the_stale_read() -> None:
    s = KeyState(K, max_buffer=10)
    first = s.snapshot()
    s.message(_mod("a", 2))
    second = s.snapshot()  # a resync: the buffer starts afresh
    assert second == first + 1 and len(s) == 0
    assert s.reading(first) is False
    assert s.read(first, [_stored("a", 1)], "old") is False
    assert s.state is State.READING and s.token is None
    assert s.read(second, [_stored("a", 2)], "new") is True
    assert s.barrier("old") is None
    assert s.barrier("new") == Released([_stored("a", 2).record, p.encode_snap(K, ["a"])], [], frozenset({"a"}))


def test_past_the_bound_the_snapshot_starts_over() -> None:
    s = KeyState(K, max_buffer=2)
    s.snapshot()
    assert [s.message(_mod("a", v)) for v in (2, 3, 4)] == [False, False, True]


def test_a_barrier_that_could_not_be_published_is_read_again() -> None:
    s = KeyState(K, max_buffer=10)
    epoch = s.snapshot()
    s.read(epoch, [], "t1")
    s.unread(epoch)
    assert s.reading(epoch) and s.token is None
    assert s.barrier("t1") is None


def test_parked_keeps_nothing_until_snapshotted_again() -> None:
    s = KeyState(K, max_buffer=10)
    epoch = s.snapshot()
    s.message(_mod("a", 2))
    s.read(epoch, [_stored("a", 1)], "t1")
    s.park()
    assert (s.state, len(s), s.token) == (State.PARKED, 0, None)
    assert s.message(_mod("a", 3)) is False and len(s) == 0  # the next read covers it
    assert s.barrier("t1") is None
    again = s.snapshot()
    assert s.read(again, [_stored("a", 3)], "t2")
    assert s.barrier("t2") == Released([_stored("a", 3).record, p.encode_snap(K, ["a"])], [], frozenset({"a"}))


def test_unsubscribe_ends_everything() -> None:
    s = KeyState(K, max_buffer=10)
    epoch = s.snapshot()
    s.read(epoch, [_stored("a", 1)], "t1")
    s.leave()
    assert (s.state, s.token, len(s)) == (State.GONE, None, 0)
    assert s.barrier("t1") is None
    assert s.message(_mod("a", 2)) is False
    with pytest.raises(RuntimeError, match="key 'k': snapshot after the client left it"):
        s.snapshot()


def test_read_queue_round_robin_with_a_cap_per_client() -> None:
    q: ReadQueue[str, str] = ReadQueue(slots=3, per_client=2)
    assert q.ask("flood", "f1") == ["f1"]
    assert q.ask("flood", "f2") == ["f2"]
    assert q.ask("flood", "f3") == []  # at its cap: the third slot stays free for others
    assert q.ask("flood", "f4") == []
    assert q.ask("one", "o1") == ["o1"]
    assert q.ask("two", "t1") == []
    assert len(q) == 3
    # Freed slots go round: "two" waits for one turn of "flood", not for all its reads.
    assert q.done("flood") == ["f3"]
    assert q.done("one") == ["t1"]  # flood is at its cap again
    assert q.done("two") == []
    assert q.done("flood") == ["f4"]
    assert q.cancel("flood", "nothing") == []
    assert len(q) == 0 and q.running == 2
    with pytest.raises(RuntimeError, match="no read running"):
        q.done("one")


def test_read_queue_cancel() -> None:
    q: ReadQueue[str, str] = ReadQueue(slots=1, per_client=1)
    assert q.ask("a", "a1") == ["a1"]
    assert q.ask("b", "b1") == []
    assert q.ask("c", "c1") == []
    assert q.cancel("b", "b1") == []
    assert q.done("a") == ["c1"]
    with pytest.raises(ValueError, match="at least 1 slot and 1 per client, got 0 and 1"):
        ReadQueue(0, 1)


def test_messages_of_other_keys_are_held_until_the_barrier() -> None:
    s = KeyState(K, max_buffer=10)
    s.snapshot()
    add = route(encode_add("agent", "x", "b", 2, {}, prev_key=K, inc="i1"))
    later = route(encode_mod("agent", "x", "b", 3, {}, inc="i1"))
    other = route(encode_add("agent", "y", "c", 5, {}, prev_key=K, inc="i1"))
    s.hold("b", add)
    s.hold("b", later)
    s.hold("c", other)
    again = s.snapshot()  # started over: what is held stays held
    assert s.drop_held("c") == {"y"}
    s.read(again, [_stored("x", 1)], "t")
    out = s.barrier("t")
    assert out is not None and out.held == [("b", add), ("b", later)] and out.ids == frozenset({"x"})
    assert not s.held
    s.hold("b", later)
    assert s.leave() == [("b", later)]  # the client left this key: the holder sends them
