"""Planning a flush: ``plan()`` on objects that belong to no world."""

from __future__ import annotations

import gc
import re
from typing import Any

import orjson
import pytest

import synk
from synk.core.batch import Batch, Kind, Op, expected, guard, kind, message, plan, put_of, record, stored, wire
from synk.core.messages import encode_add, encode_mod, rem_json
from tests.models import Agent, Note


def only(batch: Batch) -> tuple[str, Op]:
    """The one write of ``batch``, as (key, operation)."""
    [write] = list(batch.writes())
    return write


def created(**fields: Any) -> tuple[Agent, str]:
    """A new agent, planned as created (version 1); and its token."""
    a = Agent(**fields)
    _, op = only(plan([a], [], []))
    return a, op[3]


def test_create() -> None:
    a = Agent(id="a1", x=1, name="ann")
    a.y = 2  # a change before the create belongs to the create
    batch = plan([a], [], [])
    assert batch.moves == [] and batch.deletes == [] and batch.creates == [("world:0|0", 0)]
    [(key, op)] = batch.writes()
    code, t, oid, token, version, _state, diff, other = op
    assert (key, code, t, oid, version, diff, other) == ("world:0|0", "c", "agent", "a1", 1, b"", "")
    assert kind(op) is Kind.CREATE
    assert re.fullmatch(r"[0-9a-f]{12}", token)
    state = {"x": 1, "y": 2, "name": "ann", "tags": [], "info": {}}
    assert record(key, op) == encode_add("agent", "a1", "world:0|0", 1, state, inc=token)
    assert orjson.loads(record(key, op))["i"] == token  # the incarnation
    assert guard(op) == f"{token}:1\n".encode()
    # stored hidden (pending) until its id is claimed, then activated: it publishes nothing yet
    assert wire(key, op) == (f"{token}:1\n?".encode(), f"{token}:1\n?".encode() + record(key, op), b"")
    assert message(key, op) == b""
    # the object is now at version 1, with nothing pending
    assert a.version == 1 and not a.changed and a.diff == {}
    assert a._synk_token == token and a._synk_skey == "world:0|0"


def test_each_create_gets_its_own_token() -> None:
    objs = [Agent() for _ in range(50)]
    batch = plan(objs, [], [])
    assert len({op[3] for _, op in batch.writes()}) == 50
    assert [op[2] for _, op in batch.writes()] == [o.id for o in objs]


def test_update() -> None:
    a, token = created(id="a1", x=1)
    a.name = "x"
    a.y = 3
    key, op = only(plan([], [a], []))
    assert (key, op[0], op[2], op[3], op[4]) == ("world:0|0", "u", "a1", token, 2)
    assert kind(op) is Kind.UPDATE
    assert expected(op) == f"{token}:1\n{{".encode()
    assert guard(op) == f"{token}:2\n".encode()
    assert message(key, op) == encode_mod("agent", "a1", "world:0|0", 2, {"name": "x", "y": 3}, inc=token)
    assert orjson.loads(message(key, op))["diff"] == {"name": "x", "y": 3}  # only the diff
    state = {"x": 1, "y": 3, "name": "x", "tags": [], "info": {}}
    assert record(key, op) == encode_add("agent", "a1", "world:0|0", 2, state, inc=token)
    assert a.version == 2 and not a.changed


def test_versions_advance_by_one_per_plan() -> None:
    a, token = created()
    for v in range(2, 6):
        a.x = v
        _, op = only(plan([], [a], []))
        assert op[4] == v == a.version
        assert expected(op) == f"{token}:{v - 1}\n{{".encode()


def test_move() -> None:
    a, token = created(id="a1", x=1, name="n")
    a.x = 17
    batch = plan([], [a], [])
    assert batch.moves == [("world:0|0", 0)]
    key, op = only(batch)
    assert (key, op[0], op[4], op[7]) == ("world:0|0", "t", 2, "world:1|0")
    assert kind(op) is Kind.MOVE
    assert expected(op) == f"{token}:1\n{{".encode()
    state = {"x": 17, "y": 0, "name": "n", "tags": [], "info": {}}
    # mod with nsKey, published on the old key
    assert message(key, op) == encode_mod("agent", "a1", "world:0|0", 2, {"x": 17}, next_key="world:1|0", inc=token)
    # the second half: a put into the new key, publishing an add with psKey
    put = put_of(key, op)
    assert (put[0], put[7]) == ("p", "world:0|0")
    assert kind(put) is Kind.MOVE
    assert message("world:1|0", put) == encode_add("agent", "a1", "world:1|0", 2, state, prev_key="world:0|0", inc=token)
    # the stored record is the add without psKey
    assert record("world:1|0", put) == encode_add("agent", "a1", "world:1|0", 2, state, inc=token)
    assert stored("world:1|0", put) == f"{token}:2\n".encode() + record("world:1|0", put)
    assert a._synk_skey == "world:1|0"
    # the next change is an update in the new key
    a.name = "m"
    key2, op2 = only(plan([], [a], []))
    assert (op2[0], key2, op2[4]) == ("u", "world:1|0", 3)


def test_change_that_keeps_the_key_is_not_a_move() -> None:
    a, _ = created(x=1)
    a.x = 15  # still chunk 0
    key, op = only(plan([], [a], []))
    assert op[0] == "u" and key == "world:0|0"


def test_delete() -> None:
    a, token = created(id="a1", x=20)
    batch = plan([], [], [a])
    assert batch.deletes == [("world:1|0", 0)]
    key, op = only(batch)
    assert (key, op[0], op[1], op[2], op[3], op[4]) == ("world:1|0", "d", "agent", "a1", token, 1)
    assert kind(op) is Kind.DELETE
    assert expected(op) == f"{token}:1\n{{".encode()  # a delete expects the current version
    assert message(key, op) == rem_json("agent", "a1", "world:1|0", token)


def test_delete_after_updates_expects_the_latest_version() -> None:
    a, token = created()
    a.x = 1
    plan([], [a], [])
    _, op = only(plan([], [], [a]))
    assert expected(op) == f"{token}:2\n{{".encode()


def test_objects_without_a_change_are_skipped() -> None:
    a, _ = created()
    b, _ = created()
    b.name = "x"
    b.name = ""  # back to the committed value
    assert len(plan([], [a, b], [])) == 0
    assert a.version == 1 and b.version == 1


def test_created_and_changed_give_one_create() -> None:
    a = Agent(id="both")
    a.x = 5
    batch = plan([a], [a], [])
    assert len(batch) == 1
    key, op = only(batch)
    assert kind(op) is Kind.CREATE and a.version == 1
    assert orjson.loads(record(key, op))["state"]["x"] == 5


def test_deleted_and_changed_give_one_delete() -> None:
    a, _ = created()
    a.x = 3
    _, op = only(plan([], [a], [a]))
    assert kind(op) is Kind.DELETE


def test_an_object_listed_twice_in_changed_is_written_once() -> None:
    a, _ = created()
    a.x = 1
    _, op = only(plan([], [a, a], []))
    assert op[4] == 2


def test_mixed_plan() -> None:
    old, _ = created(id="old")
    gone, _ = created(id="gone")
    mover, _ = created(id="mover")
    new = Agent(id="new")
    old.name = "changed"
    mover.y = 40
    batch = plan([new], [old, mover], [gone])
    assert len(batch) == 4
    assert [(kind(op), op[2]) for _, op in batch.writes()] == [
        (Kind.CREATE, "new"),
        (Kind.DELETE, "gone"),
        (Kind.UPDATE, "old"),
        (Kind.MOVE, "mover"),
    ]
    # operations are grouped by the key the object is in
    assert {key: [op[0] for op in ops] for key, ops in batch.ops.items()} == {"world:0|0": ["c", "d", "u", "t"]}
    assert batch.creates == [("world:0|0", 0)] and batch.deletes == [("world:0|0", 1)] and batch.moves == [("world:0|0", 3)]


def test_a_bad_key_leaves_everything_untouched() -> None:
    new = Agent(id="new")
    good, _ = created(id="good")
    good.name = "changed"
    bad_note = Note(id="bad")
    plan([bad_note], [], [])
    bad_note.sub_key = "has space"
    with pytest.raises(synk.ValidationError, match=r"note 'bad': subscription key 'has space' contains ' '"):
        plan([new], [good, bad_note], [])
    assert new.version == 0 and new._synk_token == ""
    assert good.version == 1 and good.diff == {"name": "changed"}
    assert bad_note.version == 1 and bad_note.diff == {"sub_key": "has space"}


def test_a_value_that_fails_to_encode_leaves_everything_untouched() -> None:
    # Values are checked on assignment; this one bypasses that, as a bug might.
    new = Agent(id="new")
    good, _ = created(id="good")
    good.name = "changed"
    bad, _ = created(id="bad")
    bad._synk_values["name"] = "\ud800"
    bad._synk_base["name"] = ""
    with pytest.raises(synk.ValidationError, match=r"agent 'bad' field 'name' cannot be encoded as JSON"):
        plan([new], [good, bad], [])
    assert new.version == 0 and new._synk_token == ""
    assert good.version == 1 and good.diff == {"name": "changed"}
    assert bad.version == 1 and bad.diff == {"name": "\ud800"}


def test_a_state_too_deep_to_encode_names_the_object() -> None:
    # Each field encodes alone, but not inside the state (orjson stops at 254 levels).
    deep: Any = 0
    for _ in range(254):
        deep = [deep]
    bad, _ = created(id="deep")
    bad._synk_values["tags"] = deep
    bad._synk_base["tags"] = []
    with pytest.raises(synk.ValidationError, match=r"agent 'deep' cannot be encoded as JSON"):
        plan([], [bad], [])
    assert bad.version == 1 and bad.changed


def test_plan_fixes_what_is_sent() -> None:
    a, _ = created()
    a.name = "one"
    key, op = only(plan([], [a], []))
    a.name = "two"  # after planning: belongs to the next plan
    assert orjson.loads(message(key, op))["diff"] == {"name": "one"}
    assert orjson.loads(record(key, op))["state"]["name"] == "one"
    assert a.diff == {"name": "two"}


def test_a_plan_holds_nothing_the_collector_must_follow() -> None:
    # A flush keeps its plan while it waits for the store: containers in it
    # would be promoted to the oldest generation and make full collections
    # frequent in a large world. Its operations hold only str, bytes and int.
    a, _ = created(tags=["x", "y"], info={"k": [1, 2]})
    a.tags = ["z"]
    b = Agent(info={"deep": {"er": [1]}})
    c, _ = created(x=1)
    c.x = 40
    batch = plan([b], [a, c], [])
    ops = [op for _, op in batch.writes()] + [put_of(k, batch.ops[k][i]) for k, i in batch.moves]
    for op in ops:
        assert {type(v) for v in op} <= {str, bytes, int}
    gc.collect()
    assert not any(gc.is_tracked(op) for op in ops)


def test_float_subclass_values_are_encoded() -> None:
    # A value that the field accepted must not break planning (numpy.float64 is a float subclass).
    class Meters(float):
        pass

    a, _ = created(id="f1")
    a.info = {"dist": Meters(2.5)}
    key, op = only(plan([], [a], []))
    assert orjson.loads(message(key, op))["diff"] == {"info": {"dist": 2.5}}


def test_kind_values() -> None:
    assert [k.value for k in Kind] == ["create", "update", "move", "delete"]
