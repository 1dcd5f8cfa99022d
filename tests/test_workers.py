"""``synk serve --workers N``: gateway processes sharing one port, supervised.

Real processes, a real Redis and real websocket clients: the connections
spread over the workers (counted from /proc), every client converges
whichever worker it reached, a worker killed with -9 is started again while
the other worker's clients notice nothing, and SIGTERM stops every worker,
clients closed with 1001.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

import synk
from tests.gateway_env import store_view, until
from tests.models import Agent
from tests.wsclient import WsClient

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="SO_REUSEPORT spreads connections on Linux")

PREFIX = "workers:"
KEYS = ["world:0|0", "world:1|0"]


@dataclass
class Served:
    proc: asyncio.subprocess.Process
    url: str
    port: int
    pids: list[int]


@asynccontextmanager
async def serving(redis_url: str, workers: int) -> AsyncIterator[Served]:
    """``synk serve --workers N`` as a subprocess; stopped with SIGTERM, which must exit 0."""
    proc = await asyncio.create_subprocess_exec(
        *(sys.executable, "-m", "synk.cli", "serve", "--redis", redis_url, "--prefix", PREFIX, "--port", "0"),
        *("--workers", str(workers)),
        stdout=asyncio.subprocess.PIPE,
    )
    try:
        assert proc.stdout is not None
        line = (await asyncio.wait_for(proc.stdout.readline(), 60)).decode()
        assert line.startswith("synk gateway on ws://"), line
        url = line.split(" on ", 1)[1].split(" ", 1)[0]
        pids = [int(p) for p in line.rsplit("(pids ", 1)[1].rstrip(")\n").split(", ")]
        yield Served(proc, url, int(url.rstrip("/").rsplit(":", 1)[1]), pids)
    finally:
        if proc.returncode is None:
            proc.terminate()
            await asyncio.wait_for(proc.wait(), 30)


def children(pid: int) -> list[int]:
    """The processes ``pid`` started that still run (Linux: /proc/PID/task/TID/children)."""
    out: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(OSError):
            out += [int(c) for c in (task / "children").read_text().split()]
    return out


def connections_by_pid(port: int, pids: list[int], state: str = "01") -> dict[int, int]:
    """How many TCP sockets on local ``port`` each process holds (from /proc/net/tcp and fds).

    ``state`` as the kernel numbers them: 01 established, 0A listening.
    """
    inodes: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError):
            for row in Path(table).read_text().splitlines()[1:]:
                fields = row.split()
                if int(fields[1].rsplit(":", 1)[1], 16) == port and fields[3] == state:
                    inodes.add(fields[9])
    out = {}
    for pid in pids:
        held = 0
        with contextlib.suppress(OSError):
            for fd in Path(f"/proc/{pid}/fd").iterdir():
                with contextlib.suppress(OSError):
                    link = os.readlink(fd)
                    if link.startswith("socket:[") and link[8:-1] in inodes:
                        held += 1
        out[pid] = held
    return out


def gone_or_zombie(pid: int) -> bool:
    """The process has exited (reaped, or a zombie not yet reaped)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z"
    except OSError:
        return True


async def test_workers_share_the_port_and_every_client_converges(redis_url: str) -> None:
    world = await synk.connect(redis_url, prefix=PREFIX)
    try:
        agents = [world.create(Agent(id=f"w{i}", x=16 * (i % 2))) for i in range(20)]
        await world.flush()
        async with serving(redis_url, 2) as served:
            assert len(served.pids) == 2 and sorted(children(served.proc.pid)) == sorted(served.pids)
            clients = [await WsClient.open(served.url) for _ in range(24)]
            # The kernel hashes each connection to one worker: 24 all on one has odds of 2 in 16 million.
            spread = connections_by_pid(served.port, served.pids)
            assert sum(spread.values()) == 24 and all(n > 0 for n in spread.values()), spread
            for c in clients:
                await c.subscribe(KEYS)
            for a in agents:
                a.name = "seen by all"
            await world.flush()
            expected = await store_view(world, KEYS)
            for c in clients:
                await c.wait(lambda c=c: c.mirror == expected, timeout=20)  # type: ignore[misc]
            for c in clients:
                await c.close()
    finally:
        await world.close()


async def test_a_killed_worker_is_started_again_and_sigterm_stops_them_all(redis_url: str) -> None:
    world = await synk.connect(redis_url, prefix=PREFIX)
    try:
        agents = [world.create(Agent(id=f"k{i}", x=16 * (i % 2))) for i in range(10)]
        await world.flush()
        async with serving(redis_url, 2) as served:
            clients = [await WsClient.open(served.url) for _ in range(16)]
            for c in clients:
                await c.subscribe(KEYS)
            spread = connections_by_pid(served.port, served.pids)
            victim, survivor = sorted(served.pids, key=lambda pid: -spread[pid])
            os.kill(victim, signal.SIGKILL)
            # Its clients lose their connection; the survivor's keep theirs.
            await until(lambda: sum(c._reader.done() for c in clients) == spread[victim], "the killed worker's clients to see it", 10)
            await until(lambda: victim not in children(served.proc.pid) and len(children(served.proc.pid)) == 2, "a new worker", 30)
            [replacement] = [pid for pid in children(served.proc.pid) if pid != survivor]
            await until(lambda: connections_by_pid(served.port, [replacement], "0A")[replacement] == 1, "the new worker to listen", 30)
            kept = [c for c in clients if not c._reader.done()]
            assert 0 < len(kept) < len(clients), (len(kept), spread)
            # New clients, wherever they land (the new worker too), are served.
            fresh = [await WsClient.open(served.url) for _ in range(16)]
            assert connections_by_pid(served.port, [replacement])[replacement] > 0
            for c in fresh:
                await c.subscribe(KEYS)
            for a in agents:
                a.name = "after the kill"
            await world.flush()
            expected = await store_view(world, KEYS)
            for c in [*kept, *fresh]:
                await c.wait(lambda c=c: c.mirror == expected, timeout=20)  # type: ignore[misc]
                assert c.close_code is None
            # SIGTERM: every worker stops, its clients closed with 1001 (going away), and the supervisor exits 0.
            served.proc.terminate()
            assert await asyncio.wait_for(served.proc.wait(), 30) == 0
            for c in [*kept, *fresh]:
                await c.wait(lambda c=c: c.close_code is not None, timeout=10)  # type: ignore[misc]
                assert c.close_code == 1001
            assert all(gone_or_zombie(pid) for pid in (survivor, replacement))
    finally:
        await world.close()


async def test_a_second_supervisor_on_the_same_port_is_refused(redis_url: str) -> None:
    """SO_REUSEPORT would let it in, silently splitting the connections between two gateways."""
    async with serving(redis_url, 2) as served:
        second = await asyncio.create_subprocess_exec(
            *(sys.executable, "-m", "synk.cli", "serve", "--redis", redis_url, "--prefix", PREFIX),
            *("--port", str(served.port), "--workers", "2"),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        try:
            out, err = await asyncio.wait_for(second.communicate(), 60)
        finally:
            if second.returncode is None:  # it serves: the bug this test is about
                second.kill()
                await second.wait()
        assert second.returncode == 1, (out, err)
        assert f"port {served.port} is in use".encode() in err
        assert served.proc.returncode is None  # the first one serves on


def test_workers_below_one_is_one_clear_line(redis_url: str) -> None:
    from synk.cli import main

    with pytest.raises(SystemExit) as info:
        main(["serve", "--redis", redis_url, "--workers", "0"])
    assert info.value.code == 2


def test_a_worker_whose_supervisor_is_gone_exits(redis_url: str) -> None:
    # The supervisor died between starting it and its first line: it must not serve on, unwatched.
    import subprocess

    env = {**os.environ, "SYNK_SUPERVISOR_PID": "1"}  # not its parent
    argv = [sys.executable, "-m", "synk.cli", "serve", "--redis", redis_url, "--port", "0", "--reuse-port"]
    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode != 0 and "supervisor of this worker is gone" in done.stderr, done.stderr
