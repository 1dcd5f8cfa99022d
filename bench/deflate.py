"""What permessage-deflate (RFC 7692) and compact mods cost and save on synk's fan-out stream.

``python -m bench.deflate`` builds one client's stream as the fan-out
benchmark sends it (``mod`` messages of a ``body`` object whose ``ts``
changed, encoded by synk's own encoder, ids and incarnations as synk makes
them), groups it into frames of N messages (1: one message a write, as at
the fan-out benchmark's default rate; more: batch frames with a
``write_interval``), and compresses each frame as a permessage-deflate
sender does: raw deflate, ``Z_SYNC_FLUSH`` after each frame, the 4-byte
``00 00 ff ff`` tail left out (RFC 7692 §7.2.1), with the compressor's
window kept from frame to frame (context takeover) or reset for each.

Reported per setting: bytes per message before and after, the CPU time the
compression takes per message (this process, ``time.process_time``), and
the memory of one compressor, which every connection holds for its whole
life: ``(1 << (windowBits + 2)) + (1 << (memLevel + 9))`` bytes, from zlib's
zconf.h. Settings: zlib's defaults (window 15, memLevel 8) and the smaller
ones websockets documents for servers with many connections (12 and 5).

Each setting is measured on the stream as JSON (what the original client and
a client with ``compact: false`` get) and as compact mods (what synk-client
gets: the same mods as a key's mods, ``[sKey, [h, v, diff]]``, through the
gateway's own converter, ``synk.gateway.compact``; the adds that teach the
handles are left out of the count).

Nothing here is on the network: it measures the encoding alone. It prints a
table and one JSON line.
"""

from __future__ import annotations

import argparse
import json
import random
import time
import zlib
from dataclasses import dataclass

from synk.core.messages import encode_add, mod_json
from synk.core.names import new_id, new_token
from synk.gateway.compact import Compactor

#: (name, windowBits, memLevel, context takeover)
SETTINGS = [
    ("zlib default, takeover", 15, 8, True),
    ("window 12 memLevel 5, takeover", 12, 5, True),
    ("window 12 memLevel 5, no takeover", 12, 5, False),
]
TAIL = b"\x00\x00\xff\xff"


@dataclass
class Row:
    encoding: str
    setting: str
    per_frame: int
    plain_bytes: float
    deflated_bytes: float
    cpu_us: float
    compressor_kb: float


def stream(messages: int, objects: int, seed: int, *, compact: bool = False) -> list[bytes]:
    """One client's ``mod`` messages: objects of its keys changed in turn, ``ts`` stamped as the benchmark does.

    ``compact``: as a compact client gets them (its adds taught it the handles first).
    """
    rng = random.Random(seed)
    bodies = [(new_id(), new_token(), f"k{rng.randrange(100)}") for _ in range(objects)]
    converter = Compactor(lambda _key: True)
    if compact:
        for oid, inc, key in bodies:
            converter.convert(encode_add("body", oid, key, 1, {"k": 0, "ts": 0.0}, inc=inc))
    versions = [1] * objects
    out = []
    stamp = time.time()
    for _ in range(messages):
        j = rng.randrange(objects)
        versions[j] += 1
        oid, inc, key = bodies[j]
        stamp += rng.uniform(0.0, 0.002)
        data = mod_json("body", oid, key, versions[j], b'{"ts":%r}' % stamp, None, inc)
        out.append(converter.convert(data) if compact else data)
    return out


def frames(messages: list[bytes], per_frame: int) -> list[bytes]:
    """The messages as frames: alone, or as batch frames (JSON arrays) of ``per_frame``."""
    if per_frame == 1:
        return messages
    return [b"[%b]" % b",".join(messages[i : i + per_frame]) for i in range(0, len(messages), per_frame)]


def measure(encoding: str, messages: list[bytes], per_frame: int, setting: tuple[str, int, int, bool]) -> Row:
    name, wbits, mem, takeover = setting
    data = frames(messages, per_frame)
    out = 0
    compressor = zlib.compressobj(6, zlib.DEFLATED, -wbits, mem)
    t0 = time.process_time()
    for frame in data:
        if not takeover:
            compressor = zlib.compressobj(6, zlib.DEFLATED, -wbits, mem)
        chunk = compressor.compress(frame) + compressor.flush(zlib.Z_SYNC_FLUSH)
        out += len(chunk) - (len(TAIL) if chunk.endswith(TAIL) else 0)
    cpu = time.process_time() - t0
    n = len(messages)
    plain = sum(map(len, data))
    return Row(encoding, name, per_frame, plain / n, out / n, cpu / n * 1e6, ((1 << (wbits + 2)) + (1 << (mem + 9))) / 1024)


def main() -> None:
    ap = argparse.ArgumentParser(prog="python -m bench.deflate", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--messages", type=int, default=50_000, help="messages in the stream (default %(default)s)")
    ap.add_argument("--objects", type=int, default=1000, help="objects the client sees (default %(default)s: 10 keys of 100)")
    ap.add_argument("--per-frame", default="1,3,10,50", help="messages per frame to try (default %(default)s)")
    args = ap.parse_args()
    streams = {
        "json": stream(args.messages, args.objects, seed=1),
        "compact": stream(args.messages, args.objects, seed=1, compact=True),
    }
    rows = [
        measure(encoding, messages, int(n), s)
        for encoding, messages in streams.items()
        for n in args.per_frame.split(",")
        for s in SETTINGS
    ]
    print(f"deflate: {args.messages:,} mod messages of {args.objects:,} objects, compressed as permessage-deflate does")
    head = (
        f"{'encoding':8} {'setting':36} {'msgs/frame':>10} {'bytes/msg':>10} {'deflated':>9} {'saved':>6} {'CPU µs/msg':>11} {'KB/conn':>8}"
    )
    print(head)
    print("-" * len(head))
    for r in rows:
        saved = 1 - r.deflated_bytes / r.plain_bytes
        print(
            f"{r.encoding:8} {r.setting:36} {r.per_frame:>10} {r.plain_bytes:>10.1f} {r.deflated_bytes:>9.1f} {saved:>6.0%}"
            f" {r.cpu_us:>11.2f} {r.compressor_kb:>8.0f}"
        )
    print(
        json.dumps(
            {
                "bench": "deflate",
                "messages": args.messages,
                "objects": args.objects,
                "rows": [
                    {
                        "encoding": r.encoding,
                        "setting": r.setting,
                        "per_frame": r.per_frame,
                        "bytes_per_message": round(r.plain_bytes, 1),
                        "deflated_bytes_per_message": round(r.deflated_bytes, 1),
                        "cpu_us_per_message": round(r.cpu_us, 3),
                        "compressor_kb": round(r.compressor_kb),
                    }
                    for r in rows
                ],
            }
        )
    )


if __name__ == "__main__":
    main()
