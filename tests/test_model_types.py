"""Field annotations checked on assignment, refused at class definition, and typos caught."""

from __future__ import annotations

import re
from datetime import datetime  # noqa: F401  # named by an annotation below, as a string
from typing import Annotated, Any, ClassVar, Literal, Optional, Union

import pytest

import synk
from synk.core.model import field_names
from tests.models import Agent


class Every(synk.Object):
    """Every annotation synk supports."""

    type_key = "every"
    sub_key: str = "k"
    n: int = 0
    f: float = 0.0
    s: str = ""
    b: bool = False
    maybe: int | None = None
    color: Literal["red", "green", 3, None] = "red"
    tags: list[str] = []
    path: tuple[float, ...] = ()
    pos: tuple[float, str] = (0.0, "")
    scores: dict[str, int] = {}
    nested: dict[str, list[int | None]] = {}
    either: int | list[str] = 0
    anything: Any = None
    #: documented with the comment's way (typegen reads it)
    doc: Annotated[int, "documented with Annotated"] = 0
    old: Optional[Union[str, bool]] = None  # noqa: UP007, UP045  # the typing module's spelling


GOOD: list[tuple[str, Any, Any]] = [
    ("n", 5, 5),
    ("n", -(2**53 - 1), -(2**53 - 1)),
    ("f", 2.5, 2.5),
    ("f", 3, 3.0),  # an int is fine, stored as a float
    ("s", "é", "é"),
    ("b", True, True),
    ("maybe", 1, 1),
    ("maybe", None, None),
    ("color", "green", "green"),
    ("color", 3, 3),
    ("color", None, None),
    ("tags", ["a", "b"], ["a", "b"]),
    ("tags", ("a",), ["a"]),  # a tuple is a JSON array too
    ("path", [1.5, 2], [1.5, 2]),
    ("path", (), []),
    ("pos", (1.0, "x"), [1.0, "x"]),
    ("scores", {"a": 1}, {"a": 1}),
    ("nested", {"a": [1, None]}, {"a": [1, None]}),
    ("either", 4, 4),
    ("either", ["x"], ["x"]),
    ("anything", {"any": [1, "json", None]}, {"any": [1, "json", None]}),
    ("doc", 7, 7),
    ("old", "s", "s"),
    ("old", False, False),
    ("old", None, None),
]


@pytest.mark.parametrize(("field", "value", "stored"), GOOD)
def test_good_values_are_taken(field: str, value: Any, stored: Any) -> None:
    e = Every(id="e1")
    setattr(e, field, value)
    got = getattr(e, field)
    assert got == stored
    assert type(got) is type(stored) or isinstance(got, (list, dict))  # containers are frozen subclasses
    assert e.diff == ({} if stored == Every._synk_fields[field] else {field: stored})


BAD: list[tuple[str, Any, str]] = [
    ("n", "1", "expected int, got str"),
    ("n", 1.0, "expected int, got float"),
    ("n", True, "expected int, got bool"),
    ("n", None, "expected int, got None"),
    ("f", "1", "expected float, got str"),
    ("f", False, "expected float, got bool"),
    ("s", 1, "expected str, got int"),
    ("s", None, "expected str, got None"),
    ("b", 1, "expected bool, got int"),
    ("maybe", "x", "expected int | None, got str"),
    ("maybe", 1.5, "expected int | None, got float"),
    ("color", "blue", "expected Literal['red', 'green', 3, None], got str 'blue'"),
    ("color", True, "expected Literal['red', 'green', 3, None], got bool True"),
    ("color", 3.0, "expected Literal['red', 'green', 3, None], got float 3.0"),
    ("tags", "ab", "expected list[str], got str"),
    ("tags", {"a": 1}, "expected list[str], got dict"),
    ("tags", ["a", 1], "[1]: expected str, got int"),
    ("path", [1.0, "x"], "[1]: expected float, got str"),
    ("pos", (1.0,), "expected tuple[float, str], got tuple of 1"),
    ("pos", (1.0, 2.0), "[1]: expected str, got float"),
    ("scores", {"a": "1"}, "['a']: expected int, got str"),
    ("scores", {1: 1}, "expected dict[str, int], got a int key 1"),
    ("scores", [], "expected dict[str, int], got list"),
    ("nested", {"a": [1, "x"]}, "['a'][1]: expected int | None, got str"),
    ("either", "x", "expected int | list[str], got str"),
    ("either", [1], "[0]: expected str, got int"),
    ("doc", "x", "expected int, got str"),
    ("old", 1, "expected str | bool | None, got int"),
]


@pytest.mark.parametrize(("field", "value", "message"), BAD)
def test_bad_values_are_refused_with_the_object_field_expected_and_got(field: str, value: Any, message: str) -> None:
    e = Every(id="e1")
    before = getattr(e, field)
    with pytest.raises(synk.ValidationError) as info:
        setattr(e, field, value)
    where = f"every 'e1' field {field!r}"
    assert str(info.value) == (f"{where}{message}" if message.startswith("[") else f"{where}: {message}")
    assert getattr(e, field) == before
    assert e.diff == {} and not e.changed


def test_a_refused_value_leaves_a_pending_change_alone() -> None:
    e = Every(id="e1")
    e.n = 1
    with pytest.raises(synk.ValidationError):
        e.n = "2"  # type: ignore[assignment]
    assert e.diff == {"n": 1}


def test_an_int_then_the_same_float_is_no_change() -> None:
    e = Every(f=1)
    assert type(e.f) is float
    e.f = 1.0
    assert not e.changed
    e.f = 2
    assert e.diff == {"f": 2.0} and type(e.diff["f"]) is float


def test_the_json_checks_still_apply_inside_checked_values() -> None:
    e = Every(id="e1")
    with pytest.raises(synk.ValidationError, match=r"^every 'e1' field 'f': float nan is not finite"):
        e.f = float("nan")
    with pytest.raises(synk.ValidationError, match=r"^every 'e1' field 'tags'\[0\]: string holds the lone surrogate"):
        e.tags = ["\ud800"]


def test_constructor_values_are_checked() -> None:
    with pytest.raises(synk.ValidationError, match=r"^every 'e2' field 'tags'\[0\]: expected str, got int$"):
        Every(id="e2", tags=[1])


def test_a_str_enum_fits_a_literal_and_a_str() -> None:
    from enum import Enum

    class Color(str, Enum):
        RED = "red"

    e = Every()
    e.color = Color.RED  # type: ignore[assignment]
    e.s = Color.RED
    assert type(e.color) is str and e.color == "red" and type(e.s) is str


def test_a_default_that_does_not_fit_is_refused_when_the_class_is_defined() -> None:
    with pytest.raises(synk.ValidationError, match=r"^Broken\.n default: expected int, got str$"):

        class Broken(synk.Object):
            type_key = "broken"
            sub_key: str = "k"
            n: int = "0"  # type: ignore[assignment]


# -- annotations refused when the class is defined --------------------------------------------


@pytest.mark.parametrize(
    ("annotation", "why"),
    [
        ("set[int]", "a set has no JSON form; use list[X]"),
        ("bytes", "bytes have no JSON form; use str (base64, say)"),
        ("datetime", "datetime.datetime is not a JSON value synk knows how to check and send; use a float timestamp or an ISO 8601 str"),
        ("list", "say what the list holds: list[X] (list[Any] to opt out)"),
        ("dict", "say what the dict holds: dict[str, X] (dict[str, Any] to opt out)"),
        ("dict[int, str]", "dict keys are int; JSON object keys are strings: use dict[str, X]"),
        ("tuple", "say what the tuple holds: tuple[X, ...] or tuple[X, Y]"),
        ("object", "use Any to opt out of the check"),
        ("list[set[int]]", "a set has no JSON form; use list[X]"),
        ("int | bytes", "bytes have no JSON form; use str (base64, say)"),
        ("Agent", "tests.models.Agent is not a JSON value synk knows how to check and send"),
        ("Literal[1.5]", "Literal value 1.5 is a float; JSON literals are str, int, bool or None"),
    ],
)
def test_unsupported_annotations_are_a_config_error_at_class_definition(annotation: str, why: str) -> None:
    message = f"Bad.field: annotation {annotation!r} is not supported: {why}; supported: int, float, str, bool, None, X | Y"
    with pytest.raises(synk.ConfigError, match=f"^{re.escape(message)}"):
        type("Bad", (synk.Object,), {"__annotations__": {"field": annotation}, "__module__": __name__})


def test_an_unresolvable_annotation_is_a_config_error_naming_class_and_field() -> None:
    message = r"^Bad\.where: annotation 'Nowhere' cannot be resolved \(NameError: name 'Nowhere' is not defined\); synk reads"
    with pytest.raises(synk.ConfigError, match=message):
        type("Bad", (synk.Object,), {"__annotations__": {"where": "Nowhere"}, "__module__": __name__})


def test_annotations_given_as_objects_are_checked_too() -> None:
    cls = type("Objects", (synk.Object,), {"__annotations__": {"n": int, "xs": list[float]}, "n": 0, "xs": []})
    obj: Any = cls(id="o1")
    obj.xs = [1.5]
    with pytest.raises(synk.ValidationError, match=r"^Objects 'o1' field 'n': expected int, got str$"):
        obj.n = "x"
    with pytest.raises(synk.ConfigError, match=r"^Bad\.s: annotation 'set\[int\]' is not supported"):
        type("Bad", (synk.Object,), {"__annotations__": {"s": set[int]}})


# -- attributes that are not fields ---------------------------------------------------------


def test_a_typo_is_an_attribute_error_with_a_suggestion() -> None:
    a = Agent(id="a1")
    with pytest.raises(AttributeError) as info:
        a.nmae = "x"  # type: ignore[attr-defined]
    assert str(info.value) == (
        "Agent 'a1' has no field or attribute 'nmae'; did you mean 'name'?"
        " (an attribute kept on the object but never synced takes a name starting with '_')"
    )
    assert not a.changed and "nmae" not in vars(a)


def test_an_unknown_name_without_a_close_field_lists_the_fields() -> None:
    a = Agent(id="a1")
    with pytest.raises(AttributeError, match=r"has no field or attribute 'zzz'; its fields are x, y, name, tags, info \("):
        a.zzz = 1  # type: ignore[attr-defined]


class Walker(synk.Object):
    """Fields plus the attributes that are not synced."""

    type_key = "walker"
    sub_key: str = "k"
    x: int = 0
    speed: ClassVar[float] = 1.0
    _path: list[int]

    @property
    def heading(self) -> int:
        return int(self.__dict__.get("_heading", 0))

    @heading.setter
    def heading(self, value: int) -> None:
        self._heading = value


def test_local_attributes_start_with_an_underscore_and_are_not_synced() -> None:
    w = Walker()
    w._path = [1, 2]
    w._anything_else = "also fine"  # type: ignore[attr-defined]
    w._path.append(3)  # a plain, mutable local value
    assert w._path == [1, 2, 3]
    assert field_names(Walker) == ["sub_key", "x"]
    assert not w.changed and w.state() == {"sub_key": "k", "x": 0}


def test_declared_attributes_can_be_assigned() -> None:
    w = Walker()
    w.heading = 90
    assert w.heading == 90
    w.speed = 2.0  # type: ignore[misc]  # a ClassVar the class declares, shadowed on this object
    assert w.speed == 2.0 and Walker.speed == 1.0
    assert not w.changed


def test_a_read_only_property_stays_read_only() -> None:
    with pytest.raises(AttributeError, match="has no setter"):
        Agent().sub_key = "x"  # type: ignore[misc]


def test_typing_spellings_and_new_types() -> None:
    import typing

    user_id = typing.NewType("user_id", str)
    cls = type(
        "Spelled",
        (synk.Object,),
        {"__annotations__": {"u": user_id, "xs": typing.List[int], "t": typing.Tuple[int, str]}, "u": "", "xs": [], "t": (0, "")},  # noqa: UP006
    )
    obj: Any = cls(id="s1")
    obj.u = "ann"
    obj.xs = [1]
    obj.t = [2, "b"]
    with pytest.raises(synk.ValidationError, match=r"^Spelled 's1' field 'u': expected str, got int$"):
        obj.u = 1
    for bare in (typing.List, typing.Tuple, typing.Dict):  # noqa: UP006
        with pytest.raises(synk.ConfigError, match="say what the"):
            type("Bare", (synk.Object,), {"__annotations__": {"b": bare}})


def test_an_int_too_big_for_a_float_field_is_refused_not_rounded() -> None:
    e = Every(id="e1")
    with pytest.raises(synk.ValidationError, match=r"^every 'e1' field 'f': integer 9007199254740992 is outside"):
        e.f = 2**53
    with pytest.raises(synk.ValidationError, match=r"^every 'e1' field 'f': integer 1797693134862315907"):
        e.f = 2**1023 * 2
