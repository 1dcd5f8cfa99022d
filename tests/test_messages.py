"""The bytes of ``add``, ``mod`` and ``rem`` messages (PROTOCOL.md)."""

from __future__ import annotations

from typing import Any

import orjson

from synk.core.messages import RESERVED_METHODS, encode_add, encode_mod, encode_rem
from synk.core.values import freeze


def keys_of(data: bytes) -> list[str]:
    """The top-level field names of an encoded message, in wire order."""
    decoded: dict[str, Any] = orjson.loads(data)
    return list(decoded)


def test_add() -> None:
    data = encode_add("agent", "a1", "world:0|0", 1, {"x": 1, "name": "ann"})
    assert data == b'{"method":"add","t":"agent","id":"a1","sKey":"world:0|0","v":1,"state":{"x":1,"name":"ann"}}'
    assert orjson.loads(data) == {"method": "add", "t": "agent", "id": "a1", "sKey": "world:0|0", "v": 1, "state": {"x": 1, "name": "ann"}}
    assert keys_of(data) == ["method", "t", "id", "sKey", "v", "state"]


def test_add_with_previous_key() -> None:
    data = encode_add("agent", "a1", "world:1|0", 3, {"x": 17}, prev_key="world:0|0")
    assert data == b'{"method":"add","t":"agent","id":"a1","sKey":"world:1|0","v":3,"state":{"x":17},"psKey":"world:0|0"}'
    assert orjson.loads(data) == {
        "method": "add",
        "t": "agent",
        "id": "a1",
        "sKey": "world:1|0",
        "v": 3,
        "state": {"x": 17},
        "psKey": "world:0|0",
    }
    assert keys_of(data) == ["method", "t", "id", "sKey", "v", "state", "psKey"]


def test_add_with_incarnation() -> None:
    data = encode_add("agent", "a1", "world:0|0", 1, {"x": 1}, inc="0123456789abcdef")
    assert data == b'{"method":"add","t":"agent","id":"a1","sKey":"world:0|0","v":1,"state":{"x":1},"i":"0123456789abcdef"}'
    assert keys_of(data) == ["method", "t", "id", "sKey", "v", "state", "i"]


def test_add_with_incarnation_and_previous_key() -> None:
    data = encode_add("agent", "a1", "world:1|0", 3, {"x": 17}, prev_key="world:0|0", inc="tok")
    assert data == b'{"method":"add","t":"agent","id":"a1","sKey":"world:1|0","v":3,"state":{"x":17},"i":"tok","psKey":"world:0|0"}'
    assert orjson.loads(data) == {
        "method": "add",
        "t": "agent",
        "id": "a1",
        "sKey": "world:1|0",
        "v": 3,
        "state": {"x": 17},
        "i": "tok",
        "psKey": "world:0|0",
    }
    # PROTOCOL.md's order: t, id, sKey, v, state, i, optional psKey
    assert keys_of(data) == ["method", "t", "id", "sKey", "v", "state", "i", "psKey"]


def test_mod() -> None:
    data = encode_mod("agent", "a1", "world:0|0", 2, {"name": "x"})
    assert data == b'{"method":"mod","t":"agent","id":"a1","sKey":"world:0|0","v":2,"diff":{"name":"x"}}'
    assert orjson.loads(data) == {"method": "mod", "t": "agent", "id": "a1", "sKey": "world:0|0", "v": 2, "diff": {"name": "x"}}
    assert keys_of(data) == ["method", "t", "id", "sKey", "v", "diff"]


def test_mod_with_next_key() -> None:
    data = encode_mod("agent", "a1", "world:0|0", 3, {"x": 17}, next_key="world:1|0")
    assert data == b'{"method":"mod","t":"agent","id":"a1","sKey":"world:0|0","v":3,"diff":{"x":17},"nsKey":"world:1|0"}'
    assert orjson.loads(data) == {
        "method": "mod",
        "t": "agent",
        "id": "a1",
        "sKey": "world:0|0",
        "v": 3,
        "diff": {"x": 17},
        "nsKey": "world:1|0",
    }
    assert keys_of(data) == ["method", "t", "id", "sKey", "v", "diff", "nsKey"]


def test_rem() -> None:
    data = encode_rem("agent", "a1", "world:1|0")
    assert data == b'{"method":"rem","t":"agent","id":"a1","sKey":"world:1|0"}'
    assert orjson.loads(data) == {"method": "rem", "t": "agent", "id": "a1", "sKey": "world:1|0"}
    assert keys_of(data) == ["method", "t", "id", "sKey"]


def test_none_keys_are_left_out_not_null() -> None:
    assert b"psKey" not in encode_add("t", "i", "k", 1, {}, prev_key=None)
    assert b'"i"' not in encode_add("t", "x", "k", 1, {}, inc=None)
    assert b"nsKey" not in encode_mod("t", "i", "k", 2, {}, next_key=None)


def test_empty_string_previous_key_is_kept() -> None:
    # Only None means "no move"; any string is written as it is.
    assert orjson.loads(encode_add("t", "i", "k", 1, {}, prev_key=""))["psKey"] == ""


def test_frozen_values_encode_like_plain_ones() -> None:
    state = freeze({"tags": ["a", "b"], "info": {"k": [1, {"z": None}]}, "f": 1.5, "b": True}, "here")
    data = encode_add("agent", "a1", "k", 1, state)
    assert data == (
        b'{"method":"add","t":"agent","id":"a1","sKey":"k","v":1,"state":{"tags":["a","b"],"info":{"k":[1,{"z":null}]},"f":1.5,"b":true}}'
    )


def test_floats_ints_and_bools_keep_their_json_types() -> None:
    data = encode_mod("t", "i", "k", 2, {"a": 1, "b": 1.0, "c": True})
    assert data.endswith(b'"diff":{"a":1,"b":1.0,"c":true}}')


def test_text_is_utf8_not_escaped() -> None:
    data = encode_mod("t", "i", "k", 2, {"name": "Zoë 🐝"})
    assert "Zoë 🐝".encode() in data
    assert orjson.loads(data)["diff"] == {"name": "Zoë 🐝"}


def test_quotes_and_control_characters_are_escaped() -> None:
    data = encode_mod("t", "i", "k", 2, {"s": 'a"b\n\\'})
    assert b'"s":"a\\"b\\n\\\\"' in data
    assert orjson.loads(data)["diff"] == {"s": 'a"b\n\\'}


def test_reserved_methods() -> None:
    assert {"add", "mod", "rem", "snap", "resnap", "hello", "error", "updateSubscription", "resync"} == RESERVED_METHODS


def test_update_parts_assemble_add_and_mod() -> None:
    from synk.core.messages import ADD_HEAD, MOD_HEAD, update_names, update_tail

    state = {"x": 1, "name": 'é"\\'}
    diff = {"name": 'é"\\'}
    names = update_names(b"agent", b"a1", b"world:0|0", 7)
    tail = update_tail(b"abc123")
    record = ADD_HEAD + names + b'"state":' + orjson.dumps(state) + tail
    message = MOD_HEAD + names + b'"diff":' + orjson.dumps(diff) + tail
    assert record == encode_add("agent", "a1", "world:0|0", 7, state, inc="abc123")
    assert message == encode_mod("agent", "a1", "world:0|0", 7, diff, inc="abc123")


def test_json_variants_take_encoded_state() -> None:
    from synk.core.messages import add_json, mod_json, rem_json

    assert add_json("t", "i", "k", 2, b'{"a":1}', "p", "tok") == encode_add("t", "i", "k", 2, {"a": 1}, prev_key="p", inc="tok")
    assert mod_json("t", "i", "k", 2, b'{"a":1}', "n", "tok") == encode_mod("t", "i", "k", 2, {"a": 1}, next_key="n", inc="tok")
    assert rem_json("t", "i", "k", "tok") == encode_rem("t", "i", "k", inc="tok")
