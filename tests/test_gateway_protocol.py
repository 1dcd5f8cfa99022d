"""protocol.parse(): every client frame becomes a command or a ProtocolError with a stable code."""

from __future__ import annotations

import random
import re
from pathlib import Path
from typing import Any

import orjson
import pytest

from synk.errors import ProtocolError
from synk.gateway import protocol as p


def code_of(frame: str | bytes, max_keys: int = 1000) -> str:
    """The wire code parse() refuses ``frame`` with."""
    with pytest.raises(ProtocolError) as info:
        p.parse(frame, max_keys)
    return info.value.code


def sub(**fields: Any) -> str:
    return orjson.dumps({"method": "updateSubscription", **fields}).decode()


def test_update_subscription() -> None:
    cmd = p.parse(sub(add=["a", "b", "a"], remove=["c"]))
    assert cmd == p.UpdateSubscription(("a", "b"), ("c",))
    assert p.parse(sub()) == p.UpdateSubscription((), ())
    assert p.parse(sub(add=["k"])) == p.UpdateSubscription(("k",), ())
    # bytes frames (binary websocket messages) parse the same way
    assert p.parse(sub(remove=["k"]).encode()) == p.UpdateSubscription((), ("k",))


def test_resync() -> None:
    assert p.parse('{"method":"resync","keys":["x","y"]}') == p.Resync(("x", "y"))
    assert p.parse('{"method":"resync"}') == p.Resync(())


def test_custom_keeps_every_other_field() -> None:
    cmd = p.parse('{"method":"chat","text":"hi","n":[1,{"a":null}]}')
    assert cmd == p.Custom("chat", {"text": "hi", "n": [1, {"a": None}]})
    assert p.parse('{"method":"ping"}') == p.Custom("ping", {})


@pytest.mark.parametrize(
    "frame",
    ["", "not json", "{", '{"method":', "\x00", b"\xff\xfe\x00", b"\x80", "[1,2", "{'method':'x'}", "NaN"],
)
def test_bad_json(frame: str | bytes) -> None:
    assert code_of(frame) == p.BAD_JSON


def test_bad_json_reason_counts_bytes() -> None:
    with pytest.raises(ProtocolError, match="frame of 6 bytes is not valid JSON"):
        p.parse("ééé")


@pytest.mark.parametrize("frame", ["[]", "[{}]", "1", "1.5", '"method"', "null", "true"])
def test_json_that_is_not_an_object(frame: str) -> None:
    assert code_of(frame) == p.BAD_JSON


@pytest.mark.parametrize(
    "msg",
    [
        {},
        {"method": None},
        {"method": 5},
        {"method": ["updateSubscription"]},
        {"method": ""},
        {"method": "m" * 65},
        {"method": "updateSubscription", "add": "world:0|0"},
        {"method": "updateSubscription", "add": {"k": 1}},
        {"method": "updateSubscription", "add": None},
        {"method": "updateSubscription", "remove": 3},
        {"method": "updateSubscription", "add": [], "extra": 1},
        {"method": "updateSubscription", "keys": ["a"]},
        {"method": "resync", "keys": "a"},
        {"method": "resync", "keys": ["a"], "add": []},
        {"method": "add", "id": "x"},
        {"method": "mod"},
        {"method": "rem"},
        {"method": "snap"},
        {"method": "hello"},
        {"method": "error"},
    ],
)
def test_bad_message(msg: dict[str, Any]) -> None:
    assert code_of(orjson.dumps(msg)) == p.BAD_MESSAGE


@pytest.mark.parametrize("key", [1, None, ["a"], {"a": 1}, 1.5, True])
def test_a_key_that_is_not_a_string_is_a_bad_message(key: Any) -> None:
    """A wrongly typed field is bad_message (PROTOCOL.md); bad_key is for strings with bad characters."""
    assert code_of(sub(add=[key])) == p.BAD_MESSAGE
    assert code_of(orjson.dumps({"method": "resync", "keys": ["ok", key]})) == p.BAD_MESSAGE


def test_method_of_64_characters_is_custom() -> None:
    assert p.parse(orjson.dumps({"method": "m" * 64})) == p.Custom("m" * 64, {})


@pytest.mark.parametrize(
    "key", ["", "a b", " a", "a\tb", "a\nb", "{a}", "a{b", "a}b", "k" * 201, "a*", "a?b", "é", "a\x00b", "a'b", 'a"b', "a\\b"]
)
def test_bad_key(key: str) -> None:
    assert code_of(sub(add=[key])) == p.BAD_KEY
    assert code_of(sub(remove=[key])) == p.BAD_KEY
    assert code_of(orjson.dumps({"method": "resync", "keys": [key]})) == p.BAD_KEY


def test_allowed_key_characters() -> None:
    key = "AZaz09_.:|/@#+=,~-"
    assert p.parse(sub(add=[key, "k" * 200])) == p.UpdateSubscription((key, "k" * 200), ())


def test_too_many_keys() -> None:
    keys = [f"k{i}" for i in range(6)]
    assert code_of(sub(add=keys), max_keys=5) == p.TOO_MANY_KEYS
    assert code_of(sub(remove=keys), max_keys=5) == p.TOO_MANY_KEYS
    assert code_of(orjson.dumps({"method": "resync", "keys": keys}), max_keys=5) == p.TOO_MANY_KEYS
    assert p.parse(sub(add=keys[:5]), max_keys=5) == p.UpdateSubscription(tuple(keys[:5]), ())


def test_reasons_are_short_and_bounded() -> None:
    """A huge field never ends up whole in the error's reason."""
    with pytest.raises(ProtocolError) as info:
        p.parse(orjson.dumps({"method": "updateSubscription", "x" * 10_000: 1}))
    assert info.value.code == p.BAD_MESSAGE
    assert len(info.value.reason) < 300
    with pytest.raises(ProtocolError) as info:
        p.parse(sub(add=["bad key " + "x" * 10_000]))
    assert len(info.value.reason) < 300


def test_encoders() -> None:
    assert orjson.loads(p.encode_error("bad_json", "why")) == {"method": "error", "code": "bad_json", "reason": "why"}
    assert orjson.loads(p.encode_hello("1-ab")) == {"method": "hello", "client": "1-ab"}
    assert orjson.loads(p.encode_snap("k", ["a", "b"])) == {"method": "snap", "sKey": "k", "ids": ["a", "b"]}


def _random_json(rng: random.Random, depth: int = 0) -> Any:
    pick = rng.randrange(9 if depth < 3 else 5)
    if pick == 0:
        return None
    if pick == 1:
        return rng.choice([True, False])
    if pick == 2:
        return rng.randint(-(2**40), 2**40)
    if pick == 3:
        return rng.random() * 1e6
    if pick == 4:
        return "".join(rng.choice("ab {}:|\x00é\\\"'") for _ in range(rng.randrange(12)))
    if pick in (5, 6):
        return [_random_json(rng, depth + 1) for _ in range(rng.randrange(5))]
    out: dict[str, Any] = {}
    for _ in range(rng.randrange(5)):
        name = rng.choice(["method", "add", "remove", "keys", "x", ""])
        out[name] = _random_json(rng, depth + 1)
    if rng.random() < 0.7:
        out["method"] = rng.choice(["updateSubscription", "resync", "add", "snap", "chat", "", 7, None])
    return out


def test_fuzz_only_protocol_errors() -> None:
    """Whatever the frame, parse() returns a command or raises ProtocolError, never anything else."""
    rng = random.Random(20240611)
    codes = {p.BAD_JSON, p.BAD_MESSAGE, p.BAD_KEY, p.TOO_MANY_KEYS}
    seen: set[str] = set()
    for _ in range(5000):
        kind = rng.randrange(3)
        frame: str | bytes
        if kind == 0:
            frame = rng.randbytes(rng.randrange(40))
        elif kind == 1:
            frame = orjson.dumps(_random_json(rng))
        else:
            text = orjson.dumps(_random_json(rng)).decode()
            cut = rng.randrange(len(text) + 1)
            frame = text[:cut] + "".join(rng.choice('{}[]",:') for _ in range(rng.randrange(3)))
        cmd: p.Command | str
        try:
            cmd = p.parse(frame, max_keys=3)
        except ProtocolError as exc:
            cmd = exc.code
        if isinstance(cmd, str):
            assert cmd in codes, (frame, cmd)
            seen.add(cmd)
        else:
            assert isinstance(cmd, (p.UpdateSubscription, p.Resync, p.Custom))
    assert {p.BAD_JSON, p.BAD_MESSAGE} <= seen


def test_the_error_codes_agree_in_python_protocol_md_and_the_client_types() -> None:
    # The codes are defined once, in protocol.py; PROTOCOL.md's table and the
    # client's type docs are copies, and must list the same codes.
    root = Path(__file__).resolve().parents[1]
    source = (root / "src/synk/gateway/protocol.py").read_text()
    defined = set(re.findall(r'^[A-Z_]+ = "([a-z_]+)"$', source, re.MULTILINE))
    doc = (root / "PROTOCOL.md").read_text().split("## Error codes", 1)[1].split("\n## ", 1)[0]
    documented = set(re.findall(r"^\| `([a-z_]+)` \|", doc, re.MULTILINE))
    types = (root / "client/connection/index.d.ts").read_text().split("From the gateway", 1)[1].split("From the client", 1)[0]
    typed = set(re.findall(r'"([a-z_]+)"', types))
    assert "unavailable" in defined
    assert documented == defined
    assert typed == defined
