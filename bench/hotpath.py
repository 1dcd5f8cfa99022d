"""The gateway's own Python per delivery, alone: ``python -m bench.hotpath``.

``bench.fanout`` measures a whole gateway against the floor, on a shared
machine where one window moves by 20%; most of its CPU is the kernel's
sends, the same for both (its "... of which in the kernel" row). This
runs only what synk adds in user space, in one process, with no sockets
and no event loop turns: the fan-out (``Delivery.one``, the compact
conversion, ``Session.push_converted``) and the write-out
(``Session.write_out``: batch frames, websockets framing, the delivery
histogram), for ``--clients`` sessions each live on ``--keys-per-client``
of ``--keys`` keys, ``--per-tick`` messages a tick on keys in turn, a
write-out after each tick. The outlet frames each write as the
standalone server does (``ws.framed``) and drops it.

One row per variant: the original client's JSON (one message a frame),
synk-client's batch frames, and batch frames with compact mods (what
synk-client declares). Columns: process CPU µs per delivery (the best of
``--repeat`` runs: the least disturbed by the machine), deliveries, and
messages per write. The last line is one JSON object with every figure.
Informational: no target.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import time
from typing import Any

from synk.gateway.compact import Compactor
from synk.gateway.delivery import Delivery, Follower
from synk.gateway.metrics import Metrics
from synk.gateway.routing import Router
from synk.gateway.session import Outlet, Session
from synk.gateway.snapshots import KeyState, State
from synk.gateway.writeout import WriterWatch
from synk.gateway.ws import framed

VARIANTS = {"json": (False, False), "batch": (True, False), "batch+compact": (True, True)}


class _Framing(Outlet):
    """Frames every write as ``synk serve`` does, and drops it."""

    def __init__(self) -> None:
        self.writes = 0

    async def write(self, batch: list[bytes]) -> None:  # never used: write_nowait always takes it
        raise AssertionError("the hot path never waits")

    async def close(self, code: int, reason: str) -> None:
        pass

    def write_nowait(self, batch: list[bytes]) -> bool:
        framed(batch)
        self.writes += 1
        return True


def _key(k: int) -> str:
    return f"world:{k}|0"


def _mod(k: int, n: int) -> bytes:
    """A two-number mod of object ``n`` of key ``k`` (about the size bench.fanout sends)."""
    return b'{"method":"mod","t":"Unit","id":"u%d-%d","sKey":"world:%d|0","v":%d,"diff":{"x":%d.5,"ts":1733140000.125},"i":"a1"}' % (
        k, n, k, n + 2, n
    )  # fmt: skip


def _add(k: int, n: int) -> bytes:
    return b'{"method":"add","t":"Unit","id":"u%d-%d","sKey":"world:%d|0","v":1,"state":{"x":0,"ts":0},"i":"a1"}' % (k, n, k)


async def run(variant: str, args: argparse.Namespace) -> dict[str, Any]:
    """One measurement: µs of process CPU per delivery."""
    batch, compact = VARIANTS[variant]
    rnd = random.Random(1)
    metrics, router = Metrics(), Router[Follower]()
    dirty: list[Session] = []
    watch = WriterWatch(1.0)
    compactor = Compactor(lambda key: True) if compact else None
    objects = 10  # per key: a handle each for the compact variant
    if compactor is not None:
        for k in range(args.keys):
            for n in range(objects):
                compactor.convert(_add(k, n))
    outlets = []
    for c in range(args.clients):
        cid = f"{c + 1}-{c:08x}"
        outlet = _Framing()
        outlets.append(outlet)
        s = Session(
            cid, None, outlet, metrics, max_backlog_bytes=1 << 20, max_backlog_messages=10_000, stuck_timeout=10.0,
            rate=50, burst=200, key_rate=1000, key_burst=2000, on_lag=lambda s: None, on_dirty=dirty.append, watch=watch,
        )  # fmt: skip
        s.resnap, s.batch, s.compact = True, batch, compactor
        for k in rnd.sample(range(args.keys), args.keys_per_client):
            state = KeyState(_key(k), 1000)
            state.state, state.buffer = State.LIVE, ()
            s.keys[state.key] = state
            router.add(cid, state.key, (s, state))
    delivery = Delivery(router, metrics, lambda s, k: None)
    messages = [(_key(k), _mod(k, n)) for n in range(objects) for k in range(args.keys)]
    i = 0
    start = time.process_time()
    for _ in range(args.ticks):
        for _ in range(args.per_tick):
            key, data = messages[i % len(messages)]
            i += 1
            delivery.one(key, data)
        todo, dirty[:] = dirty[:], []
        for s in todo:
            s.write_out()
    cpu = time.process_time() - start
    writes = sum(o.writes for o in outlets)
    return {
        "us_per_delivery": round(cpu / metrics.messages_out * 1e6, 3),
        "deliveries": metrics.messages_out,
        "msgs_per_write": round(metrics.messages_out / writes, 2) if writes else 0.0,
    }


def main() -> None:
    ap = argparse.ArgumentParser(prog="python -m bench.hotpath", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clients", type=int, default=1000)
    ap.add_argument("--keys", type=int, default=100)
    ap.add_argument("--keys-per-client", type=int, default=10)
    ap.add_argument("--per-tick", type=int, default=10, help="messages a tick (bench.fanout's 500 changes/s at 50 Hz)")
    ap.add_argument("--ticks", type=int, default=1000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--variants", default=",".join(VARIANTS))
    args = ap.parse_args()
    variants = [v for v in args.variants.split(",") if v]
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        ap.error(f"unknown variant(s) {', '.join(unknown)}: choose from {', '.join(VARIANTS)}")
    print(
        f"hotpath: {args.clients:,} sessions on {args.keys_per_client} of {args.keys} keys, {args.per_tick} messages a tick,"
        f" {args.ticks:,} ticks, best of {args.repeat}"
    )
    print(f"{'variant':<16}{'µs/delivery':>12}{'deliveries':>12}{'msgs/write':>12}")
    out: dict[str, Any] = {"bench": "hotpath", "clients": args.clients, "keys": args.keys, "keys_per_client": args.keys_per_client,
                           "per_tick": args.per_tick, "ticks": args.ticks, "repeat": args.repeat}  # fmt: skip
    for variant in variants:
        runs = [asyncio.run(run(variant, args)) for _ in range(args.repeat)]
        best = min(runs, key=lambda r: r["us_per_delivery"])
        best["runs_us"] = [r["us_per_delivery"] for r in runs]
        out[variant] = best
        print(f"{variant:<16}{best['us_per_delivery']:>12.3f}{best['deliveries']:>12,}{best['msgs_per_write']:>12.2f}")
    print(json.dumps(out))


if __name__ == "__main__":
    main()
