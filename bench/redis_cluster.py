"""A private Redis Cluster for tests and benchmarks: a few ``redis-server
--cluster-enabled yes`` processes on free loopback ports, joined with CLUSTER
MEET, the 16,384 slots split between the primaries, and a replica per primary
when asked (what ``redis-cli --cluster create`` does, without needing
redis-cli). It can fail a primary over and move a slot between primaries, as
an operator's resharding does (the steps of the Redis Cluster specification:
SETSLOT IMPORTING/MIGRATING, MIGRATE the keys, SETSLOT NODE)."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable
from typing import Any

import redis
from redis.crc import key_slot

from bench.redis_process import RedisProcess, free_port

__all__ = ["RedisCluster"]

SLOTS = 16384


def _bus_port_free(taken: set[int] | frozenset[int] = frozenset()) -> int:
    """A free port whose cluster bus port (10,000 above) is free and valid too, neither of
    them in ``taken`` (the ports and bus ports of the cluster's other nodes: free now,
    they are not once those nodes start)."""
    for _ in range(1000):
        port = free_port()
        if port + 10000 > 65535 or port in taken or port + 10000 in taken or not _bindable(port + 10000):
            continue
        return port
    raise RuntimeError("no port with a free cluster bus port")


def _bindable(port: int) -> bool:
    """Nothing listens on ``port`` of 127.0.0.1 right now."""
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _call(client: redis.Redis, *args: object) -> Any:
    """``client.execute_command`` (redis-py leaves it untyped)."""
    return client.execute_command(*args)  # type: ignore[no-untyped-call]


def command(port: int, *args: str, timeout: float = 5.0) -> bytes:
    """One command on a fresh connection; its raw RESP reply (enough for these checks)."""
    payload = b"*%d\r\n" % len(args) + b"".join(b"$%d\r\n%b\r\n" % (len(a.encode()), a.encode()) for a in args)
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(payload)
        data = b""
        while True:
            chunk = s.recv(1 << 16)
            data += chunk
            if not chunk or _complete(data):
                return data


def _complete(data: bytes) -> bool:
    if data[:1] in (b"+", b"-", b":"):
        return data.endswith(b"\r\n")
    if data[:1] == b"$":
        head, _, rest = data.partition(b"\r\n")
        return int(head[1:]) < 0 or len(rest) >= int(head[1:]) + 2
    return data.endswith(b"\r\n")


class RedisCluster:
    """``primaries`` primaries (and as many replicas when ``replicas``), started and joined."""

    def __init__(self, primaries: int = 3, *, replicas: bool = False) -> None:
        count = primaries * (2 if replicas else 1)
        # One node's port was once another's bus port: free when both were chosen,
        # the second node could not start once the first had.
        taken: set[int] = set()
        self.nodes: list[RedisProcess] = []
        for _ in range(count):
            port = _bus_port_free(taken)
            taken.update((port, port + 10000))
            self.nodes.append(RedisProcess(port, "--cluster-enabled", "yes", "--cluster-node-timeout", "1000"))
        self.primaries = primaries

    @property
    def url(self) -> str:
        """The URL of the first node: any node is a way in."""
        return self.nodes[0].url

    def node_id(self, port: int) -> str:
        return command(port, "CLUSTER", "MYID").split(b"\r\n")[1].decode()

    def start(self, timeout: float = 30.0) -> None:
        try:
            self._start(timeout)
        except BaseException:
            # No node left running when the cluster could not be made.
            for node in self.nodes:
                node.stop()
            raise

    def _start(self, timeout: float) -> None:
        for node in self.nodes:
            self._start_node(node)
        first = self.nodes[0].port
        for node in self.nodes[1:]:
            command(node.port, "CLUSTER", "MEET", "127.0.0.1", str(first))
        per = SLOTS // self.primaries
        for i, node in enumerate(self.nodes[: self.primaries]):
            end = SLOTS - 1 if i == self.primaries - 1 else (i + 1) * per - 1
            command(node.port, "CLUSTER", "ADDSLOTSRANGE", str(i * per), str(end))
        self._wait(
            lambda: all(b"cluster_known_nodes:%d" % len(self.nodes) in command(n.port, "CLUSTER", "INFO") for n in self.nodes), timeout
        )
        for primary, replica in zip(self.nodes[: self.primaries], self.nodes[self.primaries :], strict=False):
            command(replica.port, "CLUSTER", "REPLICATE", self.node_id(primary.port))
        self._wait(lambda: all(b"cluster_state:ok" in command(n.port, "CLUSTER", "INFO") for n in self.nodes), timeout)
        # A replica that never synced would refuse to take over (its data is too old).
        replicas = self.nodes[self.primaries :]
        self._wait(lambda: all(b"master_link_status:up" in command(n.port, "INFO", "replication") for n in replicas), timeout)

    def _start_node(self, node: RedisProcess, tries: int = 5) -> None:
        """Start a node not yet in the cluster, on other ports if its own were taken meanwhile.

        Its ports were free when chosen, but any process's outgoing connection
        may take one as its ephemeral port before redis-server binds it (the
        bus port 10,000 above lies in Linux's ephemeral range): redis-server
        then exits at once.
        """
        for attempt in range(tries):
            try:
                node.start()
                return
            except RuntimeError:
                if node.proc is None or node.proc.poll() is None or attempt == tries - 1:
                    raise  # not an exit at startup (or out of tries)
                node.proc = None
                node.port = _bus_port_free({p for n in self.nodes if n is not node for p in (n.port, n.port + 10000)})

    def primary_urls(self) -> list[str]:
        """The URLs of the live nodes that are primaries now."""
        return [n.url for n in self.nodes if n.proc is not None and b"role:master" in command(n.port, "INFO", "replication")]

    def keys_by_node(self, name: Callable[[int], str], count: int) -> dict[int, list[str]]:
        """``count`` keys ``name(0)``, ``name(1)``... per primary, by its port: keys that span every node.

        A key's slot is that of its hash tag (``{KEY}``), the text itself."""
        slots = {n.port: n for n in self.primaries_now()}
        out: dict[int, list[str]] = {port: [] for port in slots}
        i = 0
        while any(len(v) < count for v in out.values()):
            key = name(i)
            found = out.setdefault(self.owner(key_slot(key.encode())).port, [])
            if len(found) < count:
                found.append(key)
            i += 1
        return out

    def owner(self, slot: int) -> RedisProcess:
        """The primary that serves ``slot`` now (asked of a live node)."""
        for node in self.nodes:
            if node.proc is None:
                continue
            for line in command(node.port, "CLUSTER", "NODES").decode().splitlines():
                fields = line.split()
                if len(fields) < 8 or "master" not in fields[2] or "fail" in fields[2]:
                    continue
                for part in fields[8:]:
                    lo, _, hi = part.partition("-")
                    if not lo.startswith("[") and int(lo) <= slot <= int(hi or lo):
                        port = int(fields[1].split(":")[1].split("@")[0])
                        return next(n for n in self.nodes if n.port == port)
        raise LookupError(f"no live primary serves slot {slot}")

    def replica_of(self, primary: RedisProcess) -> RedisProcess:
        """A live replica of ``primary`` (asked of a live node)."""
        master = self.node_id(primary.port)
        for line in command(primary.port, "CLUSTER", "NODES").decode().splitlines():
            fields = line.split()
            if len(fields) >= 4 and "slave" in fields[2] and "fail" not in fields[2] and fields[3] == master:
                port = int(fields[1].split(":")[1].split("@")[0])
                return next(n for n in self.nodes if n.port == port and n.proc is not None)
        raise LookupError(f"primary on port {primary.port} has no live replica")

    def primaries_now(self) -> list[RedisProcess]:
        """The live nodes that are primaries now."""
        return [n for n in self.nodes if n.proc is not None and b"role:master" in command(n.port, "INFO", "replication")]

    def kill_primary(self, slot: int, timeout: float = 30.0) -> tuple[RedisProcess, RedisProcess]:
        """``kill -9`` the primary serving ``slot``; returns it and the replica promoted in its place."""
        old = self.owner(slot)
        assert old.proc is not None
        old.proc.kill()
        old.proc.wait(10)
        old.proc = None
        self._wait(lambda: self.owner(slot) is not old, timeout)
        new = self.owner(slot)
        self._wait(
            lambda: all(b"cluster_state:ok" in command(n.port, "CLUSTER", "INFO") for n in self.nodes if n.proc is not None), timeout
        )
        return old, new

    def revive(self, node: RedisProcess, timeout: float = 30.0) -> None:
        """Start a killed node again on its port: it rejoins (as a replica, if it was failed over) and syncs."""
        node.start()
        self._wait(lambda: b"cluster_state:ok" in command(node.port, "CLUSTER", "INFO"), timeout)
        if b"role:slave" in command(node.port, "INFO", "replication"):
            self._wait(lambda: b"master_link_status:up" in command(node.port, "INFO", "replication"), timeout)

    def move_slot(self, slot: int, target: RedisProcess, *, between: Callable[[], object] | None = None) -> RedisProcess:
        """Move ``slot`` (and its keys) to primary ``target``; returns the primary it left.

        ``between``, if given, is called once the slot is half-moved (MIGRATING
        on its source, IMPORTING on ``target``, its keys not yet migrated): a
        test's writes then meet ASK redirections and TRYAGAIN."""
        source = self.owner(slot)
        if source is target:
            return source
        src, dst = redis.Redis(port=source.port), redis.Redis(port=target.port)
        try:
            src_id, dst_id = self.node_id(source.port), self.node_id(target.port)
            _call(dst, "CLUSTER", "SETSLOT", slot, "IMPORTING", src_id)
            _call(src, "CLUSTER", "SETSLOT", slot, "MIGRATING", dst_id)
            if between is not None:
                between()
            while True:
                keys = _call(src, "CLUSTER", "GETKEYSINSLOT", slot, 100)
                if not keys:
                    break
                _call(src, "MIGRATE", "127.0.0.1", target.port, "", 0, 5000, "KEYS", *keys)
            # The target first: from here on it answers for the slot; then the
            # source, which unsubscribes the slot's sharded channels; then the rest.
            for node in [target, source, *(n for n in self.primaries_now() if n not in (source, target))]:
                with redis.Redis(port=node.port) as client:
                    _call(client, "CLUSTER", "SETSLOT", slot, "NODE", dst_id)
        finally:
            src.close()
            dst.close()
        self._wait(lambda: self.owner(slot) is target, 10.0)
        return source

    @staticmethod
    def _wait(check: object, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                if check():  # type: ignore[operator]
                    return
            except (OSError, LookupError):  # a node down, or no primary for a slot yet
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"the cluster did not come up within {timeout} s")
            time.sleep(0.05)

    def close(self) -> None:
        for node in self.nodes:
            node.close()


def main(argv: list[str] | None = None) -> int:
    """``python -m bench.redis_cluster``: a local cluster to try synk on, until interrupted."""
    import argparse
    import signal
    import sys

    ap = argparse.ArgumentParser(prog="python -m bench.redis_cluster", description="A private local Redis Cluster on free ports.")
    ap.add_argument("--primaries", type=int, default=3, help="primaries (default 3)")
    ap.add_argument("--replicas", action="store_true", help="a replica per primary")
    args = ap.parse_args(argv)
    cluster = RedisCluster(args.primaries, replicas=args.replicas)
    stopping = False

    def stop(_signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    try:
        cluster.start()
        ports = ", ".join(str(n.port) for n in cluster.nodes)
        print(f"redis cluster ready: {cluster.url} (nodes on ports {ports}); Ctrl-C stops it", flush=True)
        while not stopping:
            signal.pause()  # woken by SIGTERM or SIGINT
    finally:
        cluster.close()
    print("redis cluster stopped", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
