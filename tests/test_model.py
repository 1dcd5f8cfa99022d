"""``synk.Object``: fields, diffs, state, ids and class checks."""

from __future__ import annotations

import re
from typing import Any, ClassVar

import pytest

import synk
from synk.core.model import field_names
from synk.core.values import FrozenDict, FrozenList
from synk.store.memory import MemoryStore
from tests.models import Agent, Note


class Counter(synk.Object):
    type_key = "counter"
    a: int = 0
    label: str = "c"

    @property
    def sub_key(self) -> str:
        return "counters"


class Person(synk.Object):
    type_key = "person"
    name: str
    age: int = 0
    sub_key: str = "people"


class Loose(synk.Object):
    """A field annotated Any: only the JSON checks apply."""

    type_key = "loose"
    v: Any = 0
    sub_key: str = "loose"


def register(cls: type[synk.Object]) -> None:
    synk.World(MemoryStore()).register(cls)


# -- the diff rule ------------------------------------------------------------------


def test_design_note_rule() -> None:
    c = Counter()
    assert c.diff == {} and not c.changed
    c.a = 1
    assert c.diff == {"a": 1} and c.changed
    assert c.a == 1  # reading gives the pending value
    c.a = 0
    assert c.diff == {} and not c.changed
    assert c.a == 0


def test_setting_the_same_value_records_nothing() -> None:
    c = Counter(a=5)
    c.a = 5
    assert c.diff == {}
    c.label = "c"
    assert not c.changed


def test_several_changes_keep_the_last_value() -> None:
    c = Counter()
    c.a = 1
    c.a = 2
    c.label = "x"
    assert c.diff == {"a": 2, "label": "x"}
    c.a = 0
    assert c.diff == {"label": "x"}


def test_diff_is_a_copy() -> None:
    c = Counter()
    c.a = 1
    c.diff["a"] = 99
    c.diff.clear()
    assert c.diff == {"a": 1} and c.a == 1


@pytest.mark.parametrize(("new", "kind"), [(1.0, float), (True, bool)])
def test_values_equal_in_python_but_not_in_json_are_a_change(new: Any, kind: type) -> None:
    c = Loose(v=1)
    c.v = new
    assert c.changed
    assert type(c.diff["v"]) is kind
    assert type(c.v) is kind
    c.v = 1
    assert not c.changed
    assert type(c.v) is int


def test_type_aware_comparison_against_the_committed_value() -> None:
    c = Loose(v=1)
    c.v = 1.0
    c.v = True  # still different from the committed int 1
    assert c.diff == {"v": True} and type(c.diff["v"]) is bool
    c.v = 1
    assert c.diff == {}


def test_zero_false_and_zero_float_are_distinct() -> None:
    c = Loose()
    c.v = False
    assert c.changed
    c.v = 0.0
    assert c.changed and type(c.v) is float
    c.v = 0
    assert not c.changed


def test_equal_lists_are_not_a_change() -> None:
    a = Agent(tags=["x"])
    a.tags = ["x"]
    assert not a.changed
    a.tags = ("x",)  # type: ignore[assignment]  # a tuple is frozen to the same list
    assert not a.changed
    a.tags = ["x", "y"]
    assert a.diff == {"tags": ["x", "y"]}


def test_refused_value_leaves_the_field_alone() -> None:
    a = Agent(id="a1", x=3)
    with pytest.raises(synk.ValidationError, match=r"agent 'a1' field 'info'"):
        a.info = {"bad": {1, 2}}
    assert a.info == {} and not a.changed


def test_a_string_utf8_cannot_encode_is_refused_on_assignment() -> None:
    # A lone surrogate (from a bad decode, say) would otherwise only fail when flushed.
    a = Agent(id="a1")
    with pytest.raises(synk.ValidationError, match=r"agent 'a1' field 'name': string holds the lone surrogate '\\ud800' at 3"):
        a.name = "bad\ud800"
    with pytest.raises(synk.ValidationError, match=r"agent 'a1' field 'info' key: string holds the lone surrogate"):
        a.info = {"\udfff": 1}
    assert not a.changed
    a.name = "fine é 🐝"
    assert a.diff == {"name": "fine é 🐝"}


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (float("nan"), "float nan is not finite"),
        (float("inf"), "float inf is not finite"),
        (float("-inf"), "float -inf is not finite"),
        (2**53, "integer 9007199254740992 is outside"),
        (-(2**53), "integer -9007199254740992 is outside"),
        (b"x", "a bytes cannot be encoded"),
    ],
)
def test_assigned_scalars_are_checked(value: Any, message: str) -> None:
    a = Loose(id="a1", v=3)
    with pytest.raises(synk.ValidationError, match=rf"^loose 'a1' field 'v': {message}"):
        a.v = value
    assert a.v == 3 and not a.changed


def test_an_int_field_checks_the_safe_range_too() -> None:
    a = Agent(id="a1", x=3)
    with pytest.raises(synk.ValidationError, match=r"^agent 'a1' field 'x': integer 9007199254740992 is outside"):
        a.x = 2**53
    assert a.x == 3 and not a.changed


def test_assigned_scalars_at_the_limits() -> None:
    a = Agent()
    a.x = 2**53 - 1
    assert a.x == 2**53 - 1
    a.x = -(2**53 - 1)
    assert a.x == -(2**53 - 1)
    b = Loose()
    b.v = 1.7976931348623157e308
    assert b.v == 1.7976931348623157e308


def test_assigned_subclass_scalars_become_plain() -> None:
    class Meters(float):
        pass

    class Count(int):
        pass

    a = Loose()
    a.v = Meters(2.5)
    assert type(a.v) is float
    b = Agent()
    b.y = Count(4)
    assert type(b.y) is int and b.diff == {"y": 4}


# -- state ---------------------------------------------------------------------------


def test_state_includes_pending_values() -> None:
    a = Agent(x=1, name="ann")
    a.y = 5
    assert a.state() == {"x": 1, "y": 5, "name": "ann", "tags": [], "info": {}}


def test_state_is_a_plain_copy() -> None:
    a = Agent(tags=["t"], info={"k": [1]})
    state = a.state()
    assert type(state["tags"]) is list
    assert type(state["info"]) is dict
    assert type(state["info"]["k"]) is list
    state["tags"].append("u")
    state["info"]["k"].append(2)
    state["x"] = 99
    assert a.tags == ["t"] and a.info == {"k": [1]} and a.x == 0
    assert not a.changed


def test_field_names_in_declaration_order() -> None:
    assert field_names(Agent) == ["x", "y", "name", "tags", "info"]
    assert field_names(Note) == ["sub_key", "text"]


# -- construction ---------------------------------------------------------------------


def test_constructor_values_are_not_a_diff() -> None:
    a = Agent(x=3, name="n")
    assert a.x == 3 and a.name == "n"
    assert not a.changed and a.version == 0


def test_unknown_constructor_field() -> None:
    with pytest.raises(synk.ValidationError, match=r"Agent has no field\(s\) bogus, other"):
        Agent(bogus=1, other=2)


def test_required_field_without_default() -> None:
    with pytest.raises(synk.ValidationError, match=r"Person '[^']+': field 'name' has no default and was not given"):
        Person()
    p = Person(name="pat")
    assert p.state() == {"name": "pat", "age": 0, "sub_key": "people"}


def test_constructor_values_are_checked() -> None:
    with pytest.raises(synk.ValidationError, match=r"loose 'a1' field 'v': float nan is not finite"):
        Loose(id="a1", v=float("nan"))
    with pytest.raises(synk.ValidationError, match=r"agent 'a1' field 'x': expected int, got str"):
        Agent(id="a1", x="3")


@pytest.mark.parametrize("name", ["id", "version", "diff", "changed", "state", "type_key"])
def test_reserved_field_names(name: str) -> None:
    with pytest.raises(synk.ConfigError, match=rf"Bad\.{name}: '{name}' is reserved"):
        type("Bad", (synk.Object,), {"__annotations__": {name: "int"}, name: 0})


def test_classvar_and_private_annotations_are_not_fields() -> None:
    class Config(synk.Object):
        type_key = "config"
        limit: ClassVar[int] = 3
        _cache: int = 0
        value: int = 1
        sub_key: str = "cfg"

    assert field_names(Config) == ["value", "sub_key"]
    c = Config()
    assert c.state() == {"value": 1, "sub_key": "cfg"}
    with pytest.raises(synk.ValidationError, match="no field"):
        Config(limit=4)


def test_subclass_inherits_fields() -> None:
    class Hero(Agent):
        type_key = "hero"
        level: int = 1

    assert field_names(Hero) == ["x", "y", "name", "tags", "info", "level"]
    h = Hero(x=20, level=3)
    assert h.sub_key == "world:1|0"
    assert h.state()["level"] == 3
    assert field_names(Agent) == ["x", "y", "name", "tags", "info"]


def test_class_attribute_gives_the_default() -> None:
    assert Agent.x == 0
    assert Agent.tags == []


def test_repr_names_the_object() -> None:
    a = Agent(id="r1", x=2)
    assert repr(a).startswith("Agent(id='r1', v=0, x=2,")


# -- ids -------------------------------------------------------------------------------


def test_custom_id() -> None:
    assert Agent(id="agent-7").id == "agent-7"


@pytest.mark.parametrize("bad", ["", "a:b", "a b", "{a}", "x" * 129, "tab\t"])
def test_invalid_custom_ids_are_refused(bad: str) -> None:
    with pytest.raises(synk.ValidationError, match="object id"):
        Agent(id=bad)


def test_non_string_id_is_refused() -> None:
    bad: Any = 7
    with pytest.raises(synk.ValidationError, match="object id must be a string, not int"):
        Agent(id=bad)


def test_default_ids_are_random_and_long() -> None:
    ids = {Agent().id for _ in range(2000)}
    assert len(ids) == 2000
    for oid in ids:
        assert re.fullmatch(r"[A-Za-z0-9_-]{22}", oid), oid


def test_id_cannot_be_assigned() -> None:
    a = Agent(id="fixed")
    with pytest.raises(AttributeError):
        a.id = "other"  # type: ignore[misc]
    assert a.id == "fixed"


# -- class checks at registration -----------------------------------------------------


def test_registration_of_valid_classes() -> None:
    world = synk.World(MemoryStore())
    world.register(Agent)
    world.register(Note)
    world.register(Agent)  # again: harmless
    assert world.types == {"agent": Agent, "note": Note}


@pytest.mark.parametrize("type_key", ["", "has space", "a:b", "x" * 65, "é"])
def test_bad_type_key(type_key: str) -> None:
    cls = type("Bad", (synk.Object,), {"type_key": type_key, "__annotations__": {"sub_key": "str"}, "sub_key": "k"})
    with pytest.raises(synk.ConfigError, match=r"Bad\.type_key is .*; set it to 1 to 64 letters"):
        register(cls)


def test_type_key_at_the_limit() -> None:
    cls = type("Long", (synk.Object,), {"type_key": "x" * 64, "__annotations__": {"sub_key": "str"}, "sub_key": "k"})
    register(cls)


def test_non_string_type_key() -> None:
    cls = type("Bad", (synk.Object,), {"type_key": 5, "__annotations__": {"sub_key": "str"}, "sub_key": "k"})
    with pytest.raises(synk.ConfigError, match="type_key is 5"):
        register(cls)


def test_missing_sub_key() -> None:
    class Lost(synk.Object):
        type_key = "lost"
        x: int = 0

    with pytest.raises(synk.ConfigError, match="Lost has no sub_key; define a sub_key property or a sub_key: str field"):
        register(Lost)


def test_type_key_used_twice() -> None:
    class Other(synk.Object):
        type_key = "agent"
        sub_key: str = "k"

    world = synk.World(MemoryStore(), [Agent])
    with pytest.raises(synk.ConfigError, match="'agent' is used by both Agent and Other"):
        world.register(Other)


def test_register_refuses_non_object_classes() -> None:
    bad: Any = dict
    with pytest.raises(synk.ConfigError, match=r"is not a synk\.Object subclass"):
        register(bad)


# -- list and dict fields ----------------------------------------------------------------


def test_list_default_is_frozen_and_not_shared_mutable_state() -> None:
    a, b = Agent(), Agent()
    assert isinstance(a.tags, FrozenList) and isinstance(a.info, FrozenDict)
    with pytest.raises(synk.FrozenValueError):
        a.tags.append("x")
    with pytest.raises(synk.FrozenValueError):
        a.info["k"] = 1
    a.tags = [*a.tags, "x"]
    assert a.tags == ["x"]
    assert b.tags == [] and Agent().tags == [] and Agent.tags == []


def test_mutable_default_in_the_class_body_is_copied_at_class_creation() -> None:
    shared: list[int] = [1]

    class Holder(synk.Object):
        type_key = "holder"
        items: list[int] = shared
        sub_key: str = "h"

    shared.append(2)
    assert Holder().items == [1]


def test_list_field_mutation_in_place_raises() -> None:
    a = Agent(tags=["a"], info={"k": [1]})
    with pytest.raises(synk.FrozenValueError, match="assign a new value"):
        a.tags.append("b")
    with pytest.raises(synk.FrozenValueError):
        a.tags += ["b"]
    with pytest.raises(synk.FrozenValueError):
        a.info["k"].append(2)
    with pytest.raises(synk.FrozenValueError):
        a.info.update(k=2)
    assert a.tags == ["a"] and a.info == {"k": [1]}
    assert not a.changed


def test_assigned_lists_are_frozen_copies() -> None:
    a = Agent()
    mine = ["a"]
    a.tags = mine
    mine.append("b")
    assert a.tags == ["a"] and a.diff == {"tags": ["a"]}
    assert isinstance(a.tags, FrozenList)


def test_bad_default_is_refused_at_class_creation() -> None:
    with pytest.raises(synk.ValidationError, match=r"Broken\.when default: a object cannot be encoded as JSON"):
        type("Broken", (synk.Object,), {"__annotations__": {"when": "Any"}, "when": object()})
