"""Field values: JSON-safety checks, freezing of lists and dicts, thawing."""

from __future__ import annotations

import copy
import math
import pickle
from collections.abc import Callable
from typing import Any

import orjson
import pytest

import synk
from synk.core.values import MAX_DEPTH, MAX_SAFE_INT, FrozenDict, FrozenList, freeze, thaw

# -- what passes, and how -----------------------------------------------------------


@pytest.mark.parametrize("value", [None, True, False, 0, -1, 1.5, -0.0, "", "héllo", MAX_SAFE_INT, -MAX_SAFE_INT])
def test_scalars_pass_unchanged(value: Any) -> None:
    out = freeze(value, "here")
    assert out == value
    assert type(out) is type(value)


def test_bool_stays_bool() -> None:
    assert freeze(True, "here") is True
    assert freeze(False, "here") is False


def test_int_subclass_becomes_plain_int() -> None:
    class Level(int):
        pass

    out = freeze(Level(3), "here")
    assert out == 3
    assert type(out) is int


def test_float_subclass_becomes_plain_float() -> None:
    # numpy.float64 is such a subclass; orjson cannot encode float subclasses,
    # so a value that passes freeze() would fail later, in the middle of a flush.
    class Meters(float):
        pass

    out = freeze(Meters(1.5), "here")
    assert out == 1.5
    assert type(out) is float
    assert orjson.dumps(freeze([Meters(2.5)], "here")) == b"[2.5]"


def test_lists_and_dicts_are_frozen_deeply() -> None:
    value = {"a": [1, {"b": [2, 3]}], "c": {"d": {}}}
    out = freeze(value, "here")
    assert out == value
    assert isinstance(out, FrozenDict)
    assert isinstance(out["a"], FrozenList)
    assert isinstance(out["a"][1], FrozenDict)
    assert isinstance(out["a"][1]["b"], FrozenList)
    assert isinstance(out["c"]["d"], FrozenDict)


def test_freeze_copies_so_the_original_stays_mutable() -> None:
    original = [1, [2]]
    out = freeze(original, "here")
    original.append(3)
    original[1].append(4)  # type: ignore[attr-defined]
    assert out == [1, [2]]


def test_tuples_become_frozen_lists() -> None:
    out = freeze((1, (2, 3)), "here")
    assert out == [1, [2, 3]]
    assert isinstance(out, FrozenList)
    assert isinstance(out[1], FrozenList)


def test_frozen_values_are_returned_as_they_are() -> None:
    out = freeze([1, 2], "here")
    assert freeze(out, "again") is out
    d = freeze({"a": 1}, "here")
    assert freeze(d, "again") is d


def test_frozen_values_still_compare_and_encode_as_plain_ones() -> None:
    out = freeze({"a": [1, {"b": None}]}, "here")
    assert out == {"a": [1, {"b": None}]}
    assert orjson.loads(orjson.dumps(out)) == {"a": [1, {"b": None}]}


# -- in-place mutation raises -------------------------------------------------------


def _list_mutations() -> list[tuple[str, Callable[[Any], object]]]:
    def iadd(v: Any) -> None:
        v += [9]

    def imul(v: Any) -> None:
        v *= 2

    def setitem(v: Any) -> None:
        v[0] = 9

    def setslice(v: Any) -> None:
        v[0:1] = [9]

    def delitem(v: Any) -> None:
        del v[0]

    def delslice(v: Any) -> None:
        del v[:]

    return [
        ("append", lambda v: v.append(9)),
        ("extend", lambda v: v.extend([9])),
        ("insert", lambda v: v.insert(0, 9)),
        ("pop", lambda v: v.pop()),
        ("remove", lambda v: v.remove(1)),
        ("clear", lambda v: v.clear()),
        ("sort", lambda v: v.sort()),
        ("reverse", lambda v: v.reverse()),
        ("+=", iadd),
        ("*=", imul),
        ("item assignment", setitem),
        ("slice assignment", setslice),
        ("del item", delitem),
        ("del slice", delslice),
    ]


def _dict_mutations() -> list[tuple[str, Callable[[Any], object]]]:
    def setitem(v: Any) -> None:
        v["a"] = 9

    def newitem(v: Any) -> None:
        v["new"] = 9

    def delitem(v: Any) -> None:
        del v["a"]

    def ior(v: Any) -> None:
        v |= {"z": 1}

    return [
        ("item assignment", setitem),
        ("new item", newitem),
        ("del item", delitem),
        ("|=", ior),
        ("update", lambda v: v.update(z=1)),
        ("pop", lambda v: v.pop("a")),
        ("popitem", lambda v: v.popitem()),
        ("setdefault", lambda v: v.setdefault("z", 1)),
        ("clear", lambda v: v.clear()),
    ]


@pytest.mark.parametrize(("name", "mutate"), _list_mutations(), ids=[n for n, _ in _list_mutations()])
def test_frozen_list_refuses_mutation(name: str, mutate: Callable[[Any], object]) -> None:
    value = freeze([3, 1, 2], "here")
    with pytest.raises(synk.FrozenValueError, match="assign a new value"):
        mutate(value)
    assert value == [3, 1, 2]


@pytest.mark.parametrize(("name", "mutate"), _dict_mutations(), ids=[n for n, _ in _dict_mutations()])
def test_frozen_dict_refuses_mutation(name: str, mutate: Callable[[Any], object]) -> None:
    value = freeze({"a": 1, "b": 2}, "here")
    with pytest.raises(synk.FrozenValueError, match="assign a new value"):
        mutate(value)
    assert value == {"a": 1, "b": 2}


def test_nested_containers_refuse_mutation_too() -> None:
    value = freeze({"a": [1, {"b": [2]}]}, "here")
    with pytest.raises(synk.FrozenValueError):
        value["a"].append(3)
    with pytest.raises(synk.FrozenValueError):
        value["a"][1]["c"] = 1
    with pytest.raises(synk.FrozenValueError):
        value["a"][1]["b"].append(1)
    assert value == {"a": [1, {"b": [2]}]}


def test_frozen_value_error_is_a_type_error_and_a_validation_error() -> None:
    value = freeze([1], "here")
    with pytest.raises(TypeError):
        value.append(2)
    with pytest.raises(synk.ValidationError):
        value.append(2)


def test_non_mutating_operations_still_work() -> None:
    lst = freeze([3, 1, 2], "here")
    assert sorted(lst) == [1, 2, 3]
    assert [*lst, 4] == [3, 1, 2, 4]
    assert type(lst + [4]) is list  # noqa: RUF005  # concatenation makes a new, plain list
    assert lst[1:] == [1, 2]
    assert lst.index(1) == 1 and lst.count(2) == 1
    d = freeze({"a": 1}, "here")
    assert {**d, "b": 2} == {"a": 1, "b": 2}
    assert d | {"b": 2} == {"a": 1, "b": 2}
    assert d.get("a") == 1 and list(d.items()) == [("a", 1)]


def test_copies_and_pickles_stay_frozen() -> None:
    value = freeze({"a": [1, {"b": 2}]}, "here")
    for other in (copy.copy(value), copy.deepcopy(value), pickle.loads(pickle.dumps(value))):
        assert other == value
        assert isinstance(other, FrozenDict)
        assert isinstance(other["a"], FrozenList)
        with pytest.raises(synk.FrozenValueError):
            other["a"].append(2)


# -- what is refused, and where -----------------------------------------------------


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (object(), "a object cannot be encoded as JSON"),
        ({1, 2}, "a set cannot be encoded as JSON"),
        (frozenset({1}), "a frozenset cannot be encoded as JSON"),
        (b"raw", "a bytes cannot be encoded as JSON"),
        (bytearray(b"raw"), "a bytearray cannot be encoded as JSON"),
        (1 + 2j, "a complex cannot be encoded as JSON"),
        (math.nan, "float nan is not finite"),
        (math.inf, "float inf is not finite"),
        (-math.inf, "float -inf is not finite"),
        (MAX_SAFE_INT + 1, f"integer {MAX_SAFE_INT + 1} is outside JavaScript's safe range"),
        (-MAX_SAFE_INT - 1, f"integer {-MAX_SAFE_INT - 1} is outside JavaScript's safe range"),
        (2**64, "integer 18446744073709551616 is outside JavaScript's safe range"),
    ],
)
def test_non_json_values_are_refused(value: Any, message: str) -> None:
    with pytest.raises(synk.ValidationError, match=f"^agent 'a1' field 'x': {message}"):
        freeze(value, "agent 'a1' field 'x'")


def test_non_string_dict_key_is_refused() -> None:
    with pytest.raises(synk.ValidationError, match=r"^here: dict key 1 is a int; JSON keys must be strings"):
        freeze({1: "one"}, "here")
    with pytest.raises(synk.ValidationError, match=r"dict key None is a NoneType"):
        freeze({None: "none"}, "here")


def test_errors_name_the_nested_location() -> None:
    with pytest.raises(synk.ValidationError, match=r"^here\['a'\]\[1\]: a object cannot be encoded as JSON"):
        freeze({"a": [1, object()]}, "here")
    with pytest.raises(synk.ValidationError, match=r"^here\[0\]\['b'\]\[2\]: float nan is not finite"):
        freeze([{"b": [0, 1, math.nan]}], "here")
    with pytest.raises(synk.ValidationError, match=r"^here\['a'\]: dict key 2 is a int"):
        freeze({"a": {2: 0}}, "here")


def test_errors_are_value_errors() -> None:
    with pytest.raises(ValueError, match="not finite"):
        freeze(math.nan, "here")


# -- thaw ---------------------------------------------------------------------------


def test_thaw_gives_plain_mutable_copies() -> None:
    frozen = freeze({"a": [1, {"b": [2]}], "c": "s"}, "here")
    plain = thaw(frozen)
    assert plain == {"a": [1, {"b": [2]}], "c": "s"}
    assert type(plain) is dict
    assert type(plain["a"]) is list
    assert type(plain["a"][1]) is dict
    assert type(plain["a"][1]["b"]) is list
    plain["a"].append(3)
    plain["a"][1]["b"].append(4)
    plain["new"] = 1
    assert frozen == {"a": [1, {"b": [2]}], "c": "s"}


def test_thaw_of_scalars_is_identity() -> None:
    for value in (None, True, 1, 1.5, "s"):
        assert thaw(value) is value


def test_freeze_thaw_round_trip() -> None:
    value = {"list": [1, 2.5, None, True, "x"], "nested": {"deep": [[1], [2, [3]]]}}
    assert thaw(freeze(value, "here")) == value


def test_str_subclass_becomes_plain_str() -> None:
    import enum

    class Color(str, enum.Enum):
        RED = "red"

    out = freeze(Color.RED, "here")
    assert out == "red"
    assert type(out) is str


def nested(levels: int) -> Any:
    """A list nested ``levels`` deep: ``nested(2) == [[0]]``."""
    value: Any = 0
    for _ in range(levels):
        value = [value]
    return value


def test_nesting_is_bounded_so_every_accepted_value_encodes() -> None:
    deepest = freeze(nested(MAX_DEPTH), "agent 'a1' field 'tags'")
    orjson.dumps({"method": "add", "state": {"tags": deepest}})  # a message wraps it in two more levels
    with pytest.raises(
        synk.ValidationError, match=rf"agent 'a1' field 'tags'(\[0\])+: lists and dicts are nested more than {MAX_DEPTH} levels deep"
    ):
        freeze(nested(MAX_DEPTH + 1), "agent 'a1' field 'tags'")
    with pytest.raises(synk.ValidationError, match="nested more than"):
        freeze({"k": nested(MAX_DEPTH)}, "f")


def test_a_frozen_value_nested_again_counts_its_levels() -> None:
    deepest = freeze(nested(MAX_DEPTH), "f")
    assert freeze(deepest, "g") is deepest
    with pytest.raises(synk.ValidationError, match=r"g\[0\]: lists and dicts are nested more than"):
        freeze([deepest], "g")
    assert freeze([freeze(nested(MAX_DEPTH - 1), "f")], "g") == nested(MAX_DEPTH)
