"""Why synk sends its own RESP on a Redis Cluster: the two write paths, side by side.

``python -m bench.cluster_paths`` starts a private cluster of three
primaries and sends the same batch of HSETs (``--calls``, over 300 keys, so
every primary gets a share) through:

synk
    the store's cluster routing (``synk.store.cluster_routing``): calls
    encoded once as RESP, grouped by node, every node's group written at once
    on one connection each.
redis-py
    redis-py's asyncio cluster pipeline (``RedisCluster.pipeline()``), which
    packs and routes each command in Python.

Both include building the calls. It prints a table and one JSON line.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time

from redis.asyncio.cluster import RedisCluster as ClusterClient

from bench.redis_cluster import RedisCluster
from synk.store.redis import RedisStore
from synk.store.resp import keyed

KEYS = 300


async def measure(url: str, calls: int, rounds: int) -> list[tuple[float, float]]:
    """(synk calls/s, redis-py calls/s) per round."""
    store = RedisStore(url)
    await store.open()
    client = ClusterClient.from_url(url)
    await client.initialize()
    assert store.routing is not None
    keys = [f"bench:{{k{i % KEYS}}}:o".encode() for i in range(calls)]
    value = b"v" * 100
    out = []
    try:
        for _ in range(rounds):
            t = time.perf_counter()
            await store.routing.send([keyed(b"HSET", k, b"f%d" % i, value) for i, k in enumerate(keys)])
            own = time.perf_counter() - t
            t = time.perf_counter()
            pipe = client.pipeline(transaction=False)
            for i, k in enumerate(keys):
                pipe.hset(k, b"f%d" % i, value)
            await pipe.execute()
            theirs = time.perf_counter() - t
            out.append((calls / own, calls / theirs))
    finally:
        await store.close()
        await client.aclose()
    return out


def main(argv: list[str] | None = None) -> int:
    """Run, print the table and the JSON line."""
    ap = argparse.ArgumentParser(prog="python -m bench.cluster_paths", description=(__doc__ or "").split("\n\n")[0])
    ap.add_argument("--calls", type=int, default=50_000, help="HSETs per batch (default 50,000)")
    ap.add_argument("--rounds", type=int, default=3, help="batches per path (default 3)")
    args = ap.parse_args(argv)
    cluster = RedisCluster(3)
    cluster.start()
    try:
        rows = asyncio.run(measure(cluster.url, args.calls, args.rounds))
    finally:
        cluster.close()
    best_own, best_theirs = max(r[0] for r in rows), max(r[1] for r in rows)
    print(f"{'path':10} {'calls/s (best of ' + str(args.rounds) + ')':>24}")
    print(f"{'synk':10} {best_own:>24,.0f}")
    print(f"{'redis-py':10} {best_theirs:>24,.0f}")
    print(f"synk's path is {best_own / best_theirs:.1f}x redis-py's cluster pipeline")
    summary = {"bench": "cluster_paths", "calls": args.calls, "synk": round(best_own), "redis_py": round(best_theirs)}
    summary["ratio"] = round(best_own / best_theirs, 2)
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
