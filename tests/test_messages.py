"""The bytes of ``add``, ``mod`` and ``rem`` messages (PROTOCOL.md)."""

from __future__ import annotations

import orjson
import pytest

from synk.core.messages import RESERVED_METHODS, encode_add, encode_mod, rem_json
from synk.core.values import freeze
from tests.node_js import js


# Exact bytes: field names and order as PROTOCOL.md gives them (t, id, sKey,
# v, state / diff, i, then psKey / nsKey when the object moves).
@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (
            encode_add("agent", "a1", "world:0|0", 1, {"x": 1, "name": "ann"}),
            b'{"method":"add","t":"agent","id":"a1","sKey":"world:0|0","v":1,"state":{"x":1,"name":"ann"}}',
        ),
        (
            encode_add("agent", "a1", "world:1|0", 3, {"x": 17}, prev_key="world:0|0"),
            b'{"method":"add","t":"agent","id":"a1","sKey":"world:1|0","v":3,"state":{"x":17},"psKey":"world:0|0"}',
        ),
        (
            encode_add("agent", "a1", "world:0|0", 1, {"x": 1}, inc="0123456789abcdef"),
            b'{"method":"add","t":"agent","id":"a1","sKey":"world:0|0","v":1,"state":{"x":1},"i":"0123456789abcdef"}',
        ),
        (
            encode_add("agent", "a1", "world:1|0", 3, {"x": 17}, prev_key="world:0|0", inc="tok"),
            b'{"method":"add","t":"agent","id":"a1","sKey":"world:1|0","v":3,"state":{"x":17},"i":"tok","psKey":"world:0|0"}',
        ),
        (
            encode_mod("agent", "a1", "world:0|0", 2, {"name": "x"}),
            b'{"method":"mod","t":"agent","id":"a1","sKey":"world:0|0","v":2,"diff":{"name":"x"}}',
        ),
        (
            encode_mod("agent", "a1", "world:0|0", 3, {"x": 17}, next_key="world:1|0"),
            b'{"method":"mod","t":"agent","id":"a1","sKey":"world:0|0","v":3,"diff":{"x":17},"nsKey":"world:1|0"}',
        ),
        (rem_json("agent", "a1", "world:1|0"), b'{"method":"rem","t":"agent","id":"a1","sKey":"world:1|0"}'),
    ],
    ids=["add", "add-moved", "add-incarnation", "add-incarnation-moved", "mod", "mod-moving", "rem"],
)
def test_message_bytes(data: bytes, expected: bytes) -> None:
    assert data == expected
    orjson.loads(data)  # and it is JSON


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


def test_update_json_is_add_and_mod() -> None:
    from synk.core.messages import update_json

    state = {"x": 1, "name": 'é"\\'}
    diff = {"name": 'é"\\'}
    record, message = update_json("agent", "a1", "world:0|0", 7, orjson.dumps(state), orjson.dumps(diff), "abc123")
    assert record == encode_add("agent", "a1", "world:0|0", 7, state, inc="abc123")
    assert message == encode_mod("agent", "a1", "world:0|0", 7, diff, inc="abc123")


def test_json_variants_take_encoded_state() -> None:
    from synk.core.messages import add_json, mod_json

    assert add_json("t", "i", "k", 2, b'{"a":1}', "p", "tok") == encode_add("t", "i", "k", 2, {"a": 1}, prev_key="p", inc="tok")
    assert mod_json("t", "i", "k", 2, b'{"a":1}', "n", "tok") == encode_mod("t", "i", "k", 2, {"a": 1}, next_key="n", inc="tok")


def test_the_js_client_reserves_the_same_methods() -> None:
    """RESERVED_METHODS has a JS copy (the client refuses to send a custom message of these): they agree."""
    assert set(js("connection/index.js", "[...m.RESERVED]")) == RESERVED_METHODS
