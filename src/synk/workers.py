"""``synk serve --workers N``: N gateway processes on one port.

One gateway process uses one core. Each worker is a whole ``synk serve``
(its own event loop, its own store subscriptions) whose listening socket
has SO_REUSEPORT, all on the same port: the kernel spreads new connections
across the workers' sockets by a hash of the connection's addresses, as
uvicorn's and gunicorn's workers share a port. A client stays on the worker
that accepted it, and every worker serves every key, so nothing has to
pass between them.

The supervisor (this module) reserves the port, starts the workers, waits
for each to say it listens, then watches them: a worker that exits is
started again (after a pause that grows while workers keep dying young);
SIGTERM or SIGINT stops every worker with SIGTERM (each closes its clients
with 1001, as a single ``synk serve`` does) and waits for them.

Each worker answers its own ``/metrics`` and ``/inspect``: behind one port
a request reaches any one worker, so those show one worker's clients.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import sys
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Sequence

__all__ = ["Supervisor", "reserve_port"]

log = logging.getLogger("synk.workers")

#: Seconds a worker has to say it listens.
READY_TIMEOUT = 60.0
#: Seconds a stopped worker has to exit before it is killed.
STOP_TIMEOUT = 10.0
#: A worker that ran less than this many seconds died young: the next start waits longer.
YOUNG_S = 5.0
#: The longest pause before starting a worker again (seconds); the first is 0.1 s, doubling.
MAX_PAUSE_S = 5.0
#: The environment variable that gives a worker its supervisor's pid.
SUPERVISOR_ENV = "SYNK_SUPERVISOR_PID"
#: What a worker prints once it listens (``synk serve``'s first line).
READY_LINE = b"synk gateway on "


def reserve_port(host: str, port: int) -> socket.socket:
    """A socket bound to ``host:port`` with SO_REUSEPORT, not listening: it holds the port for the workers.

    With port 0 the system picks a free one (read it from the socket). A
    socket that does not listen gets no connections; the workers' do. Raises
    OSError (EADDRINUSE) when anything holds the port, another ``synk serve
    --workers`` included: with SO_REUSEPORT alone, a second one on the same
    port would silently share its connections with the first.
    """
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    family, kind, proto, _, addr = infos[0]
    if port:
        # First without SO_REUSEPORT: only a free port binds (SO_REUSEADDR lets
        # connections of an earlier run in TIME_WAIT through, not a listener).
        with socket.socket(family, kind, proto) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind(addr)
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind(addr)
    except BaseException:
        sock.close()
        raise
    return sock


@dataclass
class _Worker:
    index: int
    proc: asyncio.subprocess.Process
    started: float
    drain: asyncio.Task[None] | None = None


@dataclass
class Supervisor:
    """Runs ``argv`` (a ``synk serve`` command line that listens with SO_REUSEPORT) in ``count`` processes."""

    argv: Sequence[str]
    count: int
    _workers: list[_Worker | None] = field(default_factory=list)
    _pause: float = 0.0
    _stop: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def pids(self) -> list[int]:
        """The workers' process ids now."""
        return [w.proc.pid for w in self._workers if w is not None]

    async def start(self, stop: asyncio.Event) -> None:
        """Start every worker and wait until each listens; raises SystemExit with a worker's code if one cannot start.

        ``stop`` set meanwhile stops the workers started and raises SystemExit(0).
        """
        self._stop = stop
        self._workers = [None] * self.count
        try:
            for i in range(self.count):
                self._workers[i] = await self._start(i)
        except BaseException:
            await self.stop()
            raise

    async def _start(self, index: int) -> _Worker:
        # A session of its own: a terminal's Ctrl-C reaches the supervisor only,
        # which stops the workers itself (else they would exit before it knew it
        # was stopping, and be started again).
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "synk.cli",
            *self.argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            start_new_session=True,
            # The worker asks to die with this process (see synk.cli), and exits if it is already gone.
            env={**os.environ, SUPERVISOR_ENV: str(os.getpid())},
        )
        worker = _Worker(index, proc, time.monotonic())
        # Listed at once: a stop while it gets ready stops it too.
        self._workers[index] = worker
        assert proc.stdout is not None
        ready = asyncio.ensure_future(proc.stdout.readline())
        stopping = asyncio.ensure_future(self._stop.wait())
        try:
            await asyncio.wait([ready, stopping], timeout=READY_TIMEOUT, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopping.cancel()
        if not ready.done():
            ready.cancel()
            if self._stop.is_set():
                raise SystemExit(0)
            proc.kill()
            await proc.wait()
            raise SystemExit(f"synk: worker {index} did not listen within {READY_TIMEOUT:g} s")
        line = ready.result()
        if not line.startswith(READY_LINE):
            # It exited (its error is on stderr, which it shares with us).
            code = await proc.wait()
            raise SystemExit(code or 1)
        # Its later lines (the inspector's, "stopped") are read and dropped, so that it never blocks on a full pipe.
        worker.drain = asyncio.get_running_loop().create_task(_discard(proc.stdout))
        return worker

    async def run(self, stop: asyncio.Event) -> None:
        """Watch the workers until ``stop`` is set, starting again any that exits; then stop them all."""
        stopping = asyncio.ensure_future(stop.wait())
        try:
            while True:
                exits = {asyncio.ensure_future(w.proc.wait()): w for w in self._workers if w is not None}
                done, _ = await asyncio.wait([stopping, *exits], return_when=asyncio.FIRST_COMPLETED)
                for fut in exits:
                    if fut not in done:
                        fut.cancel()
                if stopping in done:
                    return
                for fut in done:
                    worker = exits[fut]
                    await self._replace(worker, fut.result(), stop)
                    if stop.is_set():
                        return
        finally:
            stopping.cancel()
            await self.stop()

    async def _replace(self, worker: _Worker, code: int, stop: asyncio.Event) -> None:
        lived = time.monotonic() - worker.started
        self._pause = min(MAX_PAUSE_S, max(0.1, self._pause * 2)) if lived < YOUNG_S else 0.0
        log.warning(
            "synk worker %d (pid %d) exited with code %d after %.1f s; starting another in %.1f s",
            worker.index,
            worker.proc.pid,
            code,
            lived,
            self._pause,
        )
        self._workers[worker.index] = None
        if self._pause:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self._pause)
        while not stop.is_set():
            try:
                self._workers[worker.index] = await self._start(worker.index)
            except SystemExit as exc:
                self._pause = min(MAX_PAUSE_S, max(0.1, self._pause * 2))
                log.warning("synk worker %d could not start again (%s); trying again in %.1f s", worker.index, exc.code, self._pause)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), self._pause)
                continue
            new = self._workers[worker.index]
            assert new is not None
            log.info("synk worker %d started again (pid %d)", worker.index, new.proc.pid)
            return

    async def stop(self) -> None:
        """SIGTERM every worker; kill those that have not exited within ``STOP_TIMEOUT``."""
        workers = [w for w in self._workers if w is not None]
        for w in workers:
            if w.proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    w.proc.send_signal(signal.SIGTERM)
        for w in workers:
            try:
                await asyncio.wait_for(w.proc.wait(), STOP_TIMEOUT)
            except TimeoutError:
                log.warning("synk worker %d (pid %d) did not stop within %g s: killed", w.index, w.proc.pid, STOP_TIMEOUT)
                with contextlib.suppress(ProcessLookupError):
                    w.proc.kill()
                await w.proc.wait()
            if w.drain is not None:
                w.drain.cancel()
        self._workers = [None] * self.count


def die_with_supervisor() -> None:
    """In a worker, first thing (Linux): SIGTERM when the supervisor dies, even by SIGKILL, rather than serve on unwatched.

    The supervisor's pid is in ``SYNK_SUPERVISOR_PID``; if the worker's
    parent is already another process, the supervisor died before this ran,
    and the worker exits.
    """
    supervisor = os.environ.get(SUPERVISOR_ENV)
    if supervisor is None or sys.platform != "linux":
        return
    import ctypes

    pr_set_pdeathsig = 1
    ctypes.CDLL(None).prctl(pr_set_pdeathsig, signal.SIGTERM)
    if os.getppid() != int(supervisor):
        raise SystemExit("synk: the supervisor of this worker is gone")


async def _discard(stream: asyncio.StreamReader) -> None:
    while await stream.readline():
        pass
