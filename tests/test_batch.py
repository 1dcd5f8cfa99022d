"""Planning a flush: ``plan()`` on objects that belong to no world."""

from __future__ import annotations

import re
from typing import Any

import orjson
import pytest

import synk
from synk.core.batch import Kind, Write, plan
from synk.core.messages import encode_add, encode_mod, encode_rem
from tests.models import Agent, Note


def created(**fields: Any) -> tuple[Agent, Write]:
    """A new agent, planned as created (version 1)."""
    a = Agent(**fields)
    [w] = plan([a], [], [])
    return a, w


def test_create() -> None:
    a = Agent(id="a1", x=1, name="ann")
    a.y = 2  # a change before the create belongs to the create
    [w] = plan([a], [], [])
    assert w.kind is Kind.CREATE
    assert (w.id, w.type, w.key, w.version) == ("a1", "agent", "world:0|0", 1)
    assert re.fullmatch(r"[0-9a-f]{12}", w.token)
    assert w.new_key is None and w.new_message is None
    state = {"x": 1, "y": 2, "name": "ann", "tags": [], "info": {}}
    assert w.record == w.message == encode_add("agent", "a1", "world:0|0", 1, state, inc=w.token)
    assert orjson.loads(w.message)["i"] == w.token  # the incarnation
    assert w.meta == f"{w.token}:1"
    # the object is now at version 1, with nothing pending
    assert a.version == 1 and not a.changed and a.diff == {}
    assert a._synk_token == w.token and a._synk_skey == "world:0|0"


def test_each_create_gets_its_own_token() -> None:
    objs = [Agent() for _ in range(50)]
    writes = plan(objs, [], [])
    assert len({w.token for w in writes}) == 50
    assert [w.id for w in writes] == [o.id for o in objs]


def test_update() -> None:
    a, c = created(id="a1", x=1)
    a.name = "x"
    a.y = 3
    [w] = plan([], [a], [])
    assert w.kind is Kind.UPDATE
    assert (w.id, w.key, w.version, w.token) == ("a1", "world:0|0", 2, c.token)
    assert w.expected == f"{c.token}:1"
    assert w.meta == f"{c.token}:2"
    assert w.message == encode_mod("agent", "a1", "world:0|0", 2, {"name": "x", "y": 3}, inc=w.token)
    assert orjson.loads(w.message)["diff"] == {"name": "x", "y": 3}  # only the diff
    assert w.record == encode_add("agent", "a1", "world:0|0", 2, {"x": 1, "y": 3, "name": "x", "tags": [], "info": {}}, inc=c.token)
    assert orjson.loads(w.message)["i"] == w.token  # every message names its incarnation
    assert w.new_key is None and w.new_message is None
    assert a.version == 2 and not a.changed


def test_versions_advance_by_one_per_plan() -> None:
    a, c = created()
    for v in range(2, 6):
        a.x = v
        [w] = plan([], [a], [])
        assert w.version == v == a.version
        assert w.expected == f"{c.token}:{v - 1}"


def test_move() -> None:
    a, c = created(id="a1", x=1, name="n")
    a.x = 17
    [w] = plan([], [a], [])
    assert w.kind is Kind.MOVE
    assert (w.key, w.new_key, w.version) == ("world:0|0", "world:1|0", 2)
    assert w.expected == f"{c.token}:1"
    assert w.meta == f"{c.token}:2"
    state = {"x": 17, "y": 0, "name": "n", "tags": [], "info": {}}
    # mod with nsKey, published on the old key
    assert w.message == encode_mod("agent", "a1", "world:0|0", 2, {"x": 17}, next_key="world:1|0", inc=w.token)
    # add with psKey, published on the new key
    assert w.new_message == encode_add("agent", "a1", "world:1|0", 2, state, prev_key="world:0|0", inc=c.token)
    # the stored record is the add without psKey
    assert w.record == encode_add("agent", "a1", "world:1|0", 2, state, inc=c.token)
    assert w.record is not None and b"psKey" not in w.record
    assert a._synk_skey == "world:1|0"
    # the next change is an update in the new key
    a.name = "m"
    [w2] = plan([], [a], [])
    assert (w2.kind, w2.key, w2.version) == (Kind.UPDATE, "world:1|0", 3)


def test_change_that_keeps_the_key_is_not_a_move() -> None:
    a, _ = created(x=1)
    a.x = 15  # still chunk 0
    [w] = plan([], [a], [])
    assert w.kind is Kind.UPDATE and w.key == "world:0|0"


def test_delete() -> None:
    a, c = created(id="a1", x=20)
    [w] = plan([], [], [a])
    assert w.kind is Kind.DELETE
    assert (w.id, w.type, w.key, w.version, w.token) == ("a1", "agent", "world:1|0", 1, c.token)
    assert w.expected == f"{c.token}:1"  # a delete expects the current version
    assert w.record is None
    assert w.message == encode_rem("agent", "a1", "world:1|0", inc=w.token)


def test_delete_after_updates_expects_the_latest_version() -> None:
    a, c = created()
    a.x = 1
    plan([], [a], [])
    [w] = plan([], [], [a])
    assert w.expected == f"{c.token}:2"


def test_objects_without_a_change_are_skipped() -> None:
    a, _ = created()
    b, _ = created()
    b.name = "x"
    b.name = ""  # back to the committed value
    assert plan([], [a, b], []) == []
    assert a.version == 1 and b.version == 1


def test_created_and_changed_give_one_create() -> None:
    a = Agent(id="both")
    a.x = 5
    writes = plan([a], [a], [])
    assert [w.kind for w in writes] == [Kind.CREATE]
    assert a.version == 1
    assert orjson.loads(writes[0].message)["state"]["x"] == 5


def test_deleted_and_changed_give_one_delete() -> None:
    a, _ = created()
    a.x = 3
    writes = plan([], [a], [a])
    assert [w.kind for w in writes] == [Kind.DELETE]


def test_an_object_listed_twice_in_changed_is_written_once() -> None:
    a, _ = created()
    a.x = 1
    writes = plan([], [a, a], [])
    assert len(writes) == 1 and writes[0].version == 2


def test_mixed_plan() -> None:
    old, _ = created(id="old")
    gone, _ = created(id="gone")
    mover, _ = created(id="mover")
    new = Agent(id="new")
    old.name = "changed"
    mover.y = 40
    writes = plan([new], [old, mover], [gone])
    assert [(w.kind, w.id) for w in writes] == [(Kind.CREATE, "new"), (Kind.DELETE, "gone"), (Kind.UPDATE, "old"), (Kind.MOVE, "mover")]


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


def test_plan_fixes_what_is_sent() -> None:
    a, _ = created()
    a.name = "one"
    [w] = plan([], [a], [])
    a.name = "two"  # after planning: belongs to the next plan
    assert orjson.loads(w.message)["diff"] == {"name": "one"}
    assert w.record is not None and orjson.loads(w.record)["state"]["name"] == "one"
    assert a.diff == {"name": "two"}


def test_float_subclass_values_are_encoded() -> None:
    # A value that the field accepted must not break planning (numpy.float64 is a float subclass).
    class Meters(float):
        pass

    a, _ = created(id="f1")
    a.info = {"dist": Meters(2.5)}
    [w] = plan([], [a], [])
    assert orjson.loads(w.message)["diff"] == {"info": {"dist": 2.5}}


def test_kind_values() -> None:
    assert [k.value for k in Kind] == ["create", "update", "move", "delete"]
