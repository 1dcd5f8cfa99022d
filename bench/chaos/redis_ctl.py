"""The storm's redis-server: killed, restarted (with or without its data), frozen, and read.

Redis runs with the append-only file on (``appendfsync everysec``). Redis
writes the file before it answers a command, so a ``kill -9`` (which loses
no page cache, unlike a machine crash) keeps every acknowledged write:
restarting on the same folder brings the data back. ``wipe()`` deletes the
folder's files before a restart instead: the store comes back empty, as a
Redis without persistence would.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis

from bench.chaos.common import ALL_KEYS, PREFIX
from bench.redis_server import free_port
from synk.store.base import Stored

__all__ = ["ChaosRedis", "StoredObject", "read_store"]


@dataclass(frozen=True)
class StoredObject:
    """One object as the store holds it, in the shape clients report their mirror."""

    key: str
    version: int
    incarnation: str
    state: dict[str, Any]


class ChaosRedis:
    """``redis-server`` on a fixed loopback port, in its own folder."""

    def __init__(self) -> None:
        if shutil.which("redis-server") is None:
            raise SystemExit("redis-server is not on the PATH")
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="synk-chaos-redis-"))
        self.proc: subprocess.Popen[bytes] | None = None
        self.frozen = False

    @property
    def url(self) -> str:
        """The URL of database 0, reached directly (not through a proxy)."""
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def running(self) -> bool:
        """Started and not killed (it may be frozen)."""
        return self.proc is not None and self.proc.poll() is None

    def start(self, timeout: float = 20.0) -> None:
        """Start on the port, loading the folder's append-only file if any; returns once it answers PING."""
        argv = ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.dir)]
        argv += ["--save", "", "--appendonly", "yes", "--appendfsync", "everysec", "--logfile", str(self.dir / "redis.log")]
        deadline = time.monotonic() + timeout
        while True:
            self.proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            while self.proc.poll() is None and time.monotonic() < deadline:
                if self._pong():
                    return
                time.sleep(0.02)  # poll interval; the deadline bounds the wait
            # Exited (the port not yet free after a kill, say) or never answered: again, until the deadline.
            self.kill()
            if time.monotonic() > deadline:
                raise RuntimeError(f"redis-server did not start on port {self.port}; see {self.dir / 'redis.log'}")
            time.sleep(0.1)  # before the next attempt at the port

    def _pong(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as s:
                s.sendall(b"PING\r\n")
                # A loading server answers -LOADING: not ready yet.
                return s.recv(64).startswith(b"+PONG")
        except OSError:
            return False

    def kill(self) -> None:
        """``kill -9``: no shutdown, no final save."""
        if self.proc is not None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)
            self.proc = None
        self.frozen = False

    def wipe(self) -> None:
        """Delete the data files (the append-only folder) but keep the log."""
        for path in self.dir.iterdir():
            if path.name == "redis.log":
                continue
            if path.is_dir():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)

    def freeze(self) -> None:
        """SIGSTOP: the process is there, its sockets accept, nothing answers."""
        if self.proc is not None and not self.frozen:
            os.kill(self.proc.pid, signal.SIGSTOP)
            self.frozen = True

    def thaw(self) -> None:
        """SIGCONT after ``freeze()``."""
        if self.proc is not None and self.frozen:
            os.kill(self.proc.pid, signal.SIGCONT)
        self.frozen = False

    def close(self) -> None:
        """Stop for good and remove the folder."""
        self.thaw()
        self.kill()
        shutil.rmtree(self.dir, ignore_errors=True)


def parse_value(key: str, oid: str, value: bytes) -> StoredObject | None:
    """A stored hash value (``synk.store.base.Stored``): the object, or None for the mark of a half-way write."""
    stored = Stored.parse(key, oid, value)
    if not stored.live:
        return None
    msg = json.loads(stored.record)
    if msg.get("id") != oid or msg.get("sKey") != key:
        raise ValueError(f"object {oid!r} in {key!r} has a record naming {msg.get('id')!r} in {msg.get('sKey')!r}")
    return StoredObject(key, stored.version, stored.token, msg["state"])


async def read_store(urls: str | list[str], keys: list[str] = ALL_KEYS) -> dict[str, StoredObject]:
    """Every object stored in ``keys``: the hashes ``synk:{KEY}:o`` (see ``synk.store.redis``).

    ``urls`` is one Redis, or every primary of a Redis Cluster: each is read
    on its own (SCAN, then HGETALL), so that a key found on two primaries, or
    an object in two keys on different primaries, is an error rather than
    hidden by a client that follows redirections.
    """
    wanted = {f"{PREFIX}{{{key}}}:o": key for key in keys}
    hashes: dict[str, dict[bytes, bytes]] = {}
    for url in [urls] if isinstance(urls, str) else urls:
        client = aioredis.Redis.from_url(url, socket_timeout=5, socket_connect_timeout=5)
        try:
            names = [n.decode() async for n in client.scan_iter(match=f"{PREFIX}{{*}}:o", count=1000)]
            for name in names:
                key = wanted.get(name)
                if key is None:
                    continue
                if key in hashes:
                    raise ValueError(f"key {key!r} is stored on two primaries (one is {url})")
                found: dict[bytes, bytes] = await client.hgetall(name)  # type: ignore[assignment]
                hashes[key] = found
        finally:
            await client.aclose()
    out: dict[str, StoredObject] = {}
    for key, pairs in hashes.items():
        for raw_id, value in pairs.items():
            oid = raw_id.decode()
            obj = parse_value(key, oid, value)
            if obj is None:
                continue
            if oid in out:
                raise ValueError(f"object {oid!r} is stored in both {out[oid].key!r} and {key!r}")
            out[oid] = obj
    return out


async def pubsub_clients(url: str) -> list[str]:
    """The ids of the connections in pub/sub mode (the gateways' subscribers: the simulation has none)."""
    client = aioredis.Redis.from_url(url, socket_timeout=5, socket_connect_timeout=5)
    try:
        listing: list[dict[str, Any]] = await client.client_list(_type="pubsub")
    finally:
        await client.aclose()
    return [str(c["id"]) for c in listing]


async def kill_client(url: str, client_id: str) -> bool:
    """``CLIENT KILL ID``: Redis closes that connection."""
    client = aioredis.Redis.from_url(url, socket_timeout=5, socket_connect_timeout=5)
    try:
        return bool(await client.client_kill_filter(_id=client_id))
    finally:
        await client.aclose()


async def wait_started(redis: ChaosRedis) -> None:
    """``start()`` off the event loop (it polls with a deadline)."""
    await asyncio.to_thread(redis.start)
