"""The Redis store's apply.lua calls carry exactly what synk.core.batch.wire() says of each operation.

The store makes an update's bytes in its own loop (the flush's hot path),
the other operations through ``wire``; this holds the two to the same bytes.
"""

from __future__ import annotations

import hiredis

from synk.core.batch import DELETED, MOVED, PENDING, Op, wire
from synk.store.redis import RedisStore
from synk.store.scripts import apply_calls

STATE, DIFF = b'{"x":1,"y":2}', b'{"y":2}'
OPS: list[Op] = [
    ("u", "agent", "a1", "tok1", 7, STATE, DIFF, ""),
    ("u", "note", "n1", "tok2", 2, b"{}", b"{}", ""),
    ("u", "agent", "a2", "tok3", 10, STATE, DIFF, ""),
    ("t", "agent", "a3", "tok4", 3, STATE, DIFF, "world:1|0"),
    ("d", "agent", "a4", "tok5", 4, b"", b"", ""),
    ("c", "agent", "a5", "tok6", 1, STATE, b"", ""),
    ("p", "agent", "a6", "tok7", 5, STATE, b"", "world:2|0"),
    ("a", "agent", "a7", "tok8", 1, b"", b"", ""),
    ("x", "agent", "a8", "tok9", 6, b"", b"", MOVED),
    ("x", "agent", "a9", "tokA", 6, b"", b"", DELETED),
    ("x", "agent", "aA", "tokB", 1, b"", b"", PENDING),
]


def test_every_operation_is_sent_as_wire_makes_it() -> None:
    store = RedisStore("redis://127.0.0.1:1/0", prefix="enc:")  # never opened: encoding only
    groups = {"world:0|0": OPS, "world:5|5": OPS[:3]}
    index: list[tuple[str, int]] = []
    calls = list(apply_calls(store.objects_key, store.channel, groups, index))
    assert index == [("world:0|0", len(OPS)), ("world:5|5", 3)]
    for (key, ops), (_slot_key, call) in zip(groups.items(), calls, strict=True):
        reader = hiredis.Reader()
        reader.feed(call)
        args = reader.gets()
        assert reader.gets() is False  # one command, whole
        # EVALSHA sha numkeys objects-key codes messages (id expected value)* channel
        assert args[0] == b"EVALSHA" and args[2] == b"1" and args[3] == store.objects_key(key).encode()
        assert args[4] == "".join(op[0] for op in ops).encode()
        made = [wire(key, op) for op in ops]
        assert args[5] == b"\n".join(m for _, _, m in made)
        triples = args[6:-1]
        sent = [tuple(triples[i : i + 3]) for i in range(0, len(triples), 3)]
        assert sent == [(op[2].encode(), e, v) for op, (e, v, _) in zip(ops, made, strict=True)]
        assert args[-1] == store.channel(key).encode()
