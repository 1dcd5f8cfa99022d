"""The chaos harness (``python -m bench.chaos``): its mirror/store comparison, and a short seeded run end to end."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson
import pytest

from bench.chaos.compare import compare
from bench.chaos.redis_ctl import StoredObject, parse_value

ROOT = Path(__file__).resolve().parents[1]

STORE = {
    "a": StoredObject("zone:1", 3, "i-a", {"n": 2}),
    "b": StoredObject("zone:2", 1, "i-b", {"n": 0}),
    "c": StoredObject("zone:3", 5, "i-c", {"n": 4}),
}


def report(keys: list[str], objects: dict[str, list[Any]], size: int | None = None) -> dict[str, Any]:
    return {"keys": keys, "objects": objects, "size": len(objects) if size is None else size}


def test_a_mirror_equal_to_the_store_over_its_keys_does_not_diverge() -> None:
    # "c" is in a key the client does not follow: none of its business.
    d = compare(STORE, report(["zone:1", "zone:2"], {"a": ["zone:1", 3, "i-a", {"n": 2}], "b": ["zone:2", 1, "i-b", {"n": 0}]}))
    assert (d.missing, d.extra, d.wrong, d.total) == (0, 0, 0, 0)


def test_missing_extra_and_wrong_are_counted_apart() -> None:
    mirror = {
        "a": ["zone:1", 2, "i-a", {"n": 1}],  # an old version
        "c": ["zone:1", 5, "i-c", {"n": 4}],  # stored in zone:3, which the client does not follow
        "z": ["zone:2", 1, "i-z", {}],  # not stored at all
    }
    d = compare(STORE, report(["zone:1", "zone:2"], mirror))
    assert (d.missing, d.extra, d.wrong) == (1, 2, 1)  # b missing; c and z extra; a wrong
    assert {kind for kind, *_ in d.examples} == {"missing", "extra", "wrong"}


def test_another_incarnation_or_state_is_wrong_and_unlisted_objects_are_extra() -> None:
    d = compare(STORE, report(["zone:1"], {"a": ["zone:1", 3, "i-other", {"n": 2}]}, size=3))
    assert (d.missing, d.extra, d.wrong) == (0, 2, 1)
    d = compare(STORE, report(["zone:1"], {"a": ["zone:1", 3, "i-a", {"n": 9}]}))
    assert d.wrong == 1


def test_a_stored_value_is_parsed_as_the_guard_line_and_the_add_message() -> None:
    value = b'tok123:7\n{"method":"add","t":"thing","id":"x1","sKey":"zone:4","v":7,"state":{"k":4,"n":6},"i":"tok123"}'
    assert parse_value("zone:4", "x1", value) == StoredObject("zone:4", 7, "tok123", {"k": 4, "n": 6})
    with pytest.raises(ValueError, match="naming"):
        parse_value("zone:5", "x1", value)
    assert parse_value("zone:4", "x1", b"tok123:8\n>zone:5\n" + value.split(b"\n", 1)[1]) is None  # a move's mark


@pytest.mark.skipif(shutil.which("redis-server") is None or shutil.which("node") is None, reason="needs redis-server and node")
def test_a_short_seeded_storm_run_converges() -> None:
    # Each storm draws its faults from this list (seeded), over 12 clients and 2 gateways.
    args = ["--storms", "3", "--seed", "7", "--duration", "8", "--clients", "12", "--client-procs", "2", "--gateways", "2"]
    args += [
        "--faults",
        "redis-kill,redis-stop,gateway-kill,client-stall,client-slow,pubsub-kill,net-cut,net-stall",
        "--converge-timeout",
        "20",
    ]
    result = subprocess.run(
        [sys.executable, "-m", "bench.chaos", *args], cwd=ROOT, capture_output=True, text=True, timeout=170, check=False
    )
    line = orjson.loads(result.stdout.strip().splitlines()[-1])
    assert line["bench"] == "chaos" and line["error"] is None, result.stderr[-3000:]
    assert line["storms"] == 3 and all(r["clients"] == 12 for r in line["results"])
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
