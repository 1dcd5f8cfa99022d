"""What every process of the fan-out benchmark shares: names, the child protocol, CPU readings, child processes."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import resource
import signal
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence


#: The issue's targets.
TARGET_CPU_RATIO = 1 / 3
TARGET_P99_MS = 50.0

ROOT = Path(__file__).resolve().parents[2]
PREFIX = "fanout:"
#: Latency histogram: 0.1 ms bins up to 30 s (the last bin holds anything slower).
BIN_S = 1e-4
BINS = 300_000
CLK_TCK = os.sysconf("SC_CLK_TCK")


class BenchError(Exception):
    """A process of the benchmark failed; the message says which and why."""


def key_name(k: int) -> str:
    return f"k{k}"


def keys_of(client: int, keys: int, per_client: int) -> list[int]:
    """The keys client ``client`` follows: spread so that keys get the same number of clients (give or take one)."""
    stride = keys // per_client
    return [(client + j * stride) % keys for j in range(per_client)]


def raise_nofile() -> int:
    """Raise the open-file limit to the hard limit; returns the new soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = 1 << 20 if hard == resource.RLIM_INFINITY else hard
    if target > soft:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            return target
    return soft


def emit(obj: dict[str, Any]) -> None:
    """One JSON line to the orchestrator."""
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


async def stdin_lines() -> asyncio.StreamReader:
    """The orchestrator's commands, one JSON object a line."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    return reader


async def read_command(reader: asyncio.StreamReader) -> dict[str, Any]:
    line = await reader.readline()
    if not line:
        return {"cmd": "stop"}
    obj: dict[str, Any] = json.loads(line)
    return obj


# -- processes: CPU and lifetime ------------------------------------------------------------


def proc_cpu_split(pid: int) -> tuple[float, float]:
    """(user, system) CPU seconds of a process (all its threads) so far: ``utime`` and
    ``stime`` of /proc/PID/stat (proc(5)); system is the kernel's work for it, its socket sends."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return 0.0, 0.0
    fields = stat[stat.rindex(b")") + 2 :].split()
    return int(fields[11]) / CLK_TCK, int(fields[12]) / CLK_TCK


def proc_cpu(pid: int) -> float:
    """User + system CPU seconds of a process (all its threads) so far."""
    return sum(proc_cpu_split(pid))


def tree_cpu_split(pid: int) -> tuple[float, float]:
    """(user, system) CPU seconds of ``pid`` and its running descendants (Linux: /proc/PID/task/TID/children)."""
    user, system = proc_cpu_split(pid)
    with contextlib.suppress(OSError):
        for task in os.listdir(f"/proc/{pid}/task"):
            with contextlib.suppress(OSError), open(f"/proc/{pid}/task/{task}/children") as f:
                for child in f.read().split():
                    u, s = tree_cpu_split(int(child))
                    user, system = user + u, system + s
    return user, system


def tree_cpu(pid: int) -> float:
    """CPU seconds of ``pid`` and its running descendants."""
    return sum(tree_cpu_split(pid))


def machine_busy() -> tuple[float, float]:
    """(busy, total) jiffies of every core, from /proc/stat."""
    with open("/proc/stat", "rb") as f:
        parts = [int(x) for x in f.readline().split()[1:]]
    idle = parts[3] + (parts[4] if len(parts) > 4 else 0)
    total = sum(parts[:8])
    return float(total - idle), float(total)


async def wait_port(port: int, deadline: float, alive: Callable[[], bool], what: str) -> None:
    """Poll until something accepts connections on ``port``; fail at the deadline or if the process died."""
    while True:
        try:
            _r, w = await asyncio.open_connection("127.0.0.1", port)
            w.close()
            with contextlib.suppress(OSError):
                await w.wait_closed()
            return
        except OSError:
            pass
        if not alive():
            raise BenchError(f"{what} exited before listening on port {port}")
        if time.monotonic() > deadline:
            raise BenchError(f"{what} did not listen on port {port} in time")
        await asyncio.sleep(0.02)  # poll interval; the deadline bounds the wait


class Child:
    """A child process of the benchmark: JSON lines on stdin and stdout, stderr to a log file."""

    def __init__(self, name: str, proc: asyncio.subprocess.Process, log: Path) -> None:
        self.name = name
        self.proc = proc
        self.log = log

    @classmethod
    async def start(cls, name: str, argv: Sequence[str], logdir: Path, *, talk: bool = True) -> Child:
        log = logdir / f"{name}.log"
        err = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            proc = await asyncio.create_subprocess_exec(
                *argv,
                stdin=asyncio.subprocess.PIPE if talk else asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE if talk else err,
                stderr=err,
                cwd=ROOT,
                limit=64 * 1024 * 1024,
            )
        finally:
            os.close(err)
        return cls(name, proc, log)

    @property
    def alive(self) -> bool:
        return self.proc.returncode is None

    def tail(self) -> str:
        try:
            lines = self.log.read_text(errors="replace").splitlines()
        except OSError:
            return ""
        return "\n".join(lines[-15:])

    def send(self, obj: dict[str, Any]) -> None:
        assert self.proc.stdin is not None
        if self.alive:
            self.proc.stdin.write((json.dumps(obj) + "\n").encode())

    async def read(self, timeout: float) -> dict[str, Any]:
        """The next JSON object the child prints."""
        assert self.proc.stdout is not None
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = await asyncio.wait_for(self.proc.stdout.readline(), max(0.0, deadline - time.monotonic()))
            except TimeoutError:
                raise BenchError(f"{self.name} did not answer within {timeout:g} s\n{self.tail()}") from None
            if not line:
                await self.proc.wait()
                raise BenchError(f"{self.name} exited with code {self.proc.returncode}\n{self.tail()}")
            with contextlib.suppress(ValueError):
                obj = json.loads(line)
                if isinstance(obj, dict):
                    return obj

    def cpu(self) -> float:
        """CPU seconds of the process and of those it started (``synk serve --workers``'s workers)."""
        return tree_cpu(self.proc.pid) if self.alive else 0.0

    def kernel_cpu(self) -> float:
        """The part of ``cpu()`` spent in the kernel (system time)."""
        return tree_cpu_split(self.proc.pid)[1] if self.alive else 0.0

    async def stop(self, timeout: float = 10.0) -> None:
        if not self.alive:
            return
        with contextlib.suppress(ProcessLookupError):
            self.proc.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(self.proc.wait(), timeout)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                self.proc.kill()
            await self.proc.wait()
