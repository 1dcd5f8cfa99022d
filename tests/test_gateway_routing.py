"""routing: route() decodes a store message once, replay() filters a snapshot window, Router counts clients per key."""

from __future__ import annotations

from synk.core.messages import encode_add, encode_mod, rem_json
from synk.gateway.routing import Routed, Router, replay, route


def test_route_add() -> None:
    data = encode_add("agent", "a1", "k", 3, {"x": 1})
    r = route(data)
    assert r == Routed(data, "add", "a1", 3, None, False)
    assert r.id is not None
    assert r.data is data  # the very same bytes go to every client


def test_route_add_moved_in() -> None:
    r = route(encode_add("agent", "a1", "new", 4, {}, prev_key="old"))
    assert (r.method, r.prev_key, r.leaves) == ("add", "old", False)


def test_route_mod() -> None:
    assert route(encode_mod("agent", "a1", "k", 5, {"x": 2})) == Routed(
        encode_mod("agent", "a1", "k", 5, {"x": 2}), "mod", "a1", 5, None, False
    )
    moved = route(encode_mod("agent", "a1", "k", 6, {"x": 20}, next_key="k2"))
    assert (moved.method, moved.version, moved.prev_key, moved.leaves) == ("mod", 6, None, True)


def test_route_rem() -> None:
    r = route(rem_json("agent", "a1", "k"))
    assert (r.method, r.id, r.version, r.leaves) == ("rem", "a1", None, True)


def test_route_psKey_only_counts_on_add() -> None:
    r = route(b'{"method":"mod","id":"a","v":2,"diff":{},"psKey":"x"}')
    assert r.prev_key is None


def test_route_custom_and_garbage() -> None:
    custom = route(b'{"method":"chat","id":"not-an-object"}')
    assert (custom.method, custom.id) == ("chat", None)
    for data in (b"not json", b"[1,2]", b'"add"', b"", b"{"):
        r = route(data)
        assert r == Routed(data, "", None, None, None, False)
    assert route(b'{"id":"x","v":1}').id is None


def test_route_non_integer_version() -> None:
    assert route(b'{"method":"mod","id":"a","v":"7","diff":{}}').version is None
    assert route(b'{"method":"add","id":5,"v":1,"state":{}}').id == "5"


def _mod(oid: str, v: int, key: str = "k", nxt: str | None = None) -> Routed:
    return route(encode_mod("agent", oid, key, v, {"v": v}, next_key=nxt))


def _add(oid: str, v: int, key: str = "k", prev: str | None = None) -> Routed:
    return route(encode_add("agent", oid, key, v, {}, prev_key=prev))


def test_replay_drops_what_the_snapshot_already_has() -> None:
    buffered = [_mod("a", 2), _mod("a", 3), _mod("a", 4), _mod("b", 1)]
    out = replay(buffered, {"a": (3, "i1"), "b": (1, "i1")})
    assert out == [buffered[2].data]


def test_replay_keeps_custom_messages_and_rem_in_order() -> None:
    custom = route(b'{"method":"chat","text":"hi"}')
    rem = route(rem_json("agent", "a", "k"))
    buffered = [custom, _mod("a", 2), rem]
    assert replay(buffered, {"a": (5, "i1")}) == [custom.data, rem.data]


def test_replay_of_objects_not_in_the_snapshot() -> None:
    # "c" left before the snapshot (mod with nsKey), then came back: only the return counts.
    before = [_mod("c", 2), _mod("c", 3, nxt="other")]
    after = [_add("c", 4, prev="other"), _mod("c", 5)]
    # "d" is created after the snapshot: everything of it is news.
    new = [route(encode_add("agent", "d", "k", 1, {})), _mod("d", 2)]
    # "e" was deleted before the snapshot.
    gone = [_mod("e", 9), route(rem_json("agent", "e", "k"))]
    buffered = before + new[:1] + gone + after + new[1:]
    assert replay(buffered, {}) == [new[0].data, after[0].data, after[1].data, new[1].data]


def test_replay_of_nothing() -> None:
    assert replay([], {"a": (1, "i1")}) == []


def _inc(method: str, oid: str, v: int, inc: str) -> Routed:
    if method == "add":
        return route(encode_add("agent", oid, "k", v, {}, inc=inc))
    if method == "rem":
        return route(rem_json("agent", oid, "k", inc))
    return route(encode_mod("agent", oid, "k", v, {"v": v}, inc=inc))


def test_replay_of_an_id_created_again_after_the_snapshot() -> None:
    # The snapshot has incarnation "old" at v3; then it is deleted and created again.
    stale = [_inc("mod", "a", 3, "old")]
    news = [_inc("mod", "a", 4, "old"), _inc("rem", "a", 0, "old"), _inc("add", "a", 1, "new"), _inc("mod", "a", 2, "new")]
    assert replay(stale + news, {"a": (3, "old")}) == [m.data for m in news]


def test_replay_of_an_id_created_again_before_the_snapshot() -> None:
    # Incarnation "old" was deleted and "new" created before the snapshot took "new" at v2.
    stale = [_inc("mod", "a", 9, "old"), _inc("rem", "a", 0, "old"), _inc("add", "a", 1, "new"), _inc("mod", "a", 2, "new")]
    news = [_inc("mod", "a", 3, "new")]
    assert replay(stale + news, {"a": (2, "new")}) == [m.data for m in news]


def test_router_reference_counts() -> None:
    r: Router[int] = Router()
    assert len(r) == 0
    assert r.add("c1", "k", 1) is True
    assert r.add("c2", "k", 2) is False
    assert r.add("c2", "k", 3) is False  # once per client: the follower value replaced
    assert r.add("c1", "j", 4) is True
    assert dict(r.clients("k")) == {"c1": 1, "c2": 3}
    assert sorted(r.keys()) == ["j", "k"]
    assert len(r) == 2
    assert r.remove("c1", "k") is False
    assert r.remove("c1", "k") is False  # not following it any more
    assert r.remove("c3", "k") is False
    assert r.remove("c2", "k") is True  # the last one
    assert dict(r.clients("k")) == {}
    assert r.remove("c2", "k") is False
    assert r.keys() == ["j"]
    assert r.remove("c1", "nothing") is False
    assert r.add("c9", "k", 5) is True  # a fresh first client again


def test_router_empty_clients_is_shared_and_empty() -> None:
    r: Router[int] = Router()
    assert dict(r.clients("a")) == {}
    r.add("c", "b", 1)
    assert dict(r.clients("a")) == {}
