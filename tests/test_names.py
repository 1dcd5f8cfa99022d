"""Object ids and subscription keys: how they are made and what is refused."""

from __future__ import annotations

import re
from typing import Any

import pytest

import synk
from synk.core.names import MAX_ID_LENGTH, MAX_KEY_LENGTH, check_id, check_key, new_id, new_token, new_tokens
from tests.node_js import js

URL_SAFE = re.compile(r"[A-Za-z0-9_-]+")


# -- new_id -------------------------------------------------------------------------


def test_new_id_is_22_url_safe_characters() -> None:
    for _ in range(200):
        oid = new_id()
        assert len(oid) == 22  # 22 base64 characters carry 128 bits, well over 96
        assert URL_SAFE.fullmatch(oid), oid
        assert ":" not in oid


def test_new_id_is_a_valid_id() -> None:
    for _ in range(200):
        oid = new_id()
        assert check_id(oid) == oid


def test_new_ids_do_not_repeat() -> None:
    ids = {new_id() for _ in range(10_000)}
    assert len(ids) == 10_000


def test_new_token_is_random_hex() -> None:
    tokens = {new_token() for _ in range(1000)}
    assert len(tokens) == 1000
    for token in tokens:
        assert re.fullmatch(r"[0-9a-f]{12}", token), token


def test_new_tokens_are_like_new_token() -> None:
    tokens = new_tokens(1000)
    assert len(tokens) == len(set(tokens)) == 1000
    for token in tokens:
        assert re.fullmatch(r"[0-9a-f]{12}", token), token
    assert new_tokens(0) == []


# -- check_id -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    ["a", "agent-1", "A_b.c~d+e=f@g#h|i/j,k", "x" * MAX_ID_LENGTH, "0", "(a)[b]<c>?!$%&*;^`'"],
)
def test_check_id_accepts(value: str) -> None:
    assert check_id(value) == value


def test_check_id_refuses_empty() -> None:
    with pytest.raises(synk.ValidationError, match="object id is empty"):
        check_id("")


def test_check_id_refuses_too_long() -> None:
    with pytest.raises(synk.ValidationError, match=r"object id is 129 characters long, over the limit of 128"):
        check_id("x" * (MAX_ID_LENGTH + 1))


def test_check_id_refuses_colon() -> None:
    with pytest.raises(synk.ValidationError, match=r"object id 'agent:1' contains ':'"):
        check_id("agent:1")


@pytest.mark.parametrize(("value", "bad"), [("a b", " "), ("a\tb", "\t"), ("a\nb", "\n"), ("ab\r", "\r"), ("\u00a0x", "\u00a0")])
def test_check_id_refuses_whitespace(value: str, bad: str) -> None:
    with pytest.raises(synk.ValidationError, match=re.escape(f"contains {bad!r}")):
        check_id(value)


@pytest.mark.parametrize(("value", "bad"), [('a"b', '"'), ("a\\b", "\\")])
def test_check_id_refuses_quotes_and_backslashes(value: str, bad: str) -> None:
    # Ids go into JSON messages unescaped.
    with pytest.raises(synk.ValidationError, match=re.escape(f"contains {bad!r}")):
        check_id(value)


@pytest.mark.parametrize(("value", "bad"), [("a{b", "{"), ("a}b", "}"), ("{tag}", "{")])
def test_check_id_refuses_braces(value: str, bad: str) -> None:
    with pytest.raises(synk.ValidationError, match=re.escape(f"contains {bad!r}")) as info:
        check_id(value)
    assert "braces" in str(info.value)


@pytest.mark.parametrize("value", ["a\x00b", "a\x7fb", "\x1b[0m"])
def test_check_id_refuses_control_characters(value: str) -> None:
    with pytest.raises(synk.ValidationError, match="object id"):
        check_id(value)


@pytest.mark.parametrize(("value", "name"), [(1, "int"), (None, "NoneType"), (b"ab", "bytes"), (["a"], "list")])
def test_check_id_refuses_non_strings(value: Any, name: str) -> None:
    with pytest.raises(synk.ValidationError, match=f"object id must be a string, not {name}"):
        check_id(value)


def test_check_id_errors_are_value_errors() -> None:
    with pytest.raises(ValueError, match="empty"):
        check_id("")


# -- check_key ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    ["world:3|4", "a", "notes", "A-Z_a.z:0|9/@#+=,~-", "k" * MAX_KEY_LENGTH, "room:lobby"],
)
def test_check_key_accepts(value: str) -> None:
    assert check_key(value) == value


def test_check_key_allows_colon_unlike_ids() -> None:
    assert check_key("world:0|0") == "world:0|0"
    with pytest.raises(synk.ValidationError):
        check_id("world:0|0")


def test_check_key_refuses_empty() -> None:
    with pytest.raises(synk.ValidationError, match="subscription key is empty"):
        check_key("")


def test_check_key_refuses_too_long() -> None:
    with pytest.raises(synk.ValidationError, match=r"subscription key is 201 characters long, over the limit of 200"):
        check_key("k" * (MAX_KEY_LENGTH + 1))


@pytest.mark.parametrize(
    ("value", "bad"),
    [
        ("has space", " "),
        ("tab\there", "\t"),
        ("new\nline", "\n"),
        ("{tag}", "{"),
        ("a}", "}"),
        ("é", "é"),
        ("a*b", "*"),
        ("a\x00", "\x00"),
    ],
)
def test_check_key_refuses_characters(value: str, bad: str) -> None:
    with pytest.raises(synk.ValidationError, match=re.escape(f"contains {bad!r}")) as info:
        check_key(value)
    assert "allowed are letters, digits" in str(info.value)


def test_check_key_answers_the_same_every_time() -> None:
    # Valid keys may be remembered; refused ones must stay refused.
    for _ in range(3):
        assert check_key("world:9|9") == "world:9|9"
        with pytest.raises(synk.ValidationError):
            check_key("world 9")
        with pytest.raises(synk.ValidationError):
            check_key("k" * (MAX_KEY_LENGTH + 1))


def test_check_key_of_a_str_subclass() -> None:
    class Key(str):
        pass

    assert check_key(Key("room")) == "room"
    with pytest.raises(synk.ValidationError):
        check_key(Key("a room"))


def test_check_key_error_shortens_a_long_value() -> None:
    value = "a" * 150 + " "
    with pytest.raises(synk.ValidationError) as info:
        check_key(value)
    assert len(str(info.value)) < 200


@pytest.mark.parametrize(("value", "name"), [(3, "int"), (None, "NoneType"), (b"k", "bytes"), (("a",), "tuple")])
def test_check_key_refuses_non_strings(value: Any, name: str) -> None:
    with pytest.raises(synk.ValidationError, match=f"subscription key must be a string, not {name}"):
        check_key(value)


def test_the_js_client_takes_exactly_the_keys_python_takes() -> None:
    """The key pattern has two copies, Python's (check_key) and the JS client's (isValidKey): they agree."""
    candidates = [chr(c) for c in range(0x20, 0x7F)] + ["é", "ключ", "\t", "a\n", "", "a" * MAX_KEY_LENGTH, "a" * (MAX_KEY_LENGTH + 1)]
    taken = js("mirror/shape.js", "data.map(m.isValidKey)", candidates)

    def python_takes(key: str) -> bool:
        try:
            check_key(key)
        except synk.ValidationError:
            return False
        return True

    assert {k: v for k, v in zip(candidates, taken, strict=True) if v != python_takes(k)} == {}
    assert sum(taken) > 60  # letters, digits and the punctuation: the comparison saw both answers
