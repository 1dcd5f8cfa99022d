"""The Python side of the client's end-to-end tests: Redis, a gateway and a small world.

The Node tests (``client/e2e/*.test.js``) spawn this script and drive it over
its standard streams: one JSON command per line on stdin, one JSON answer
per command on stdout, in order. Logs (the gateway's included) go to
stderr. It runs

- a private ``redis-server`` on a free loopback port (``bench.redis_process``),
- a gateway on that Redis: by default ``python -m synk.cli serve`` as a
  subprocess, which can be stopped and restarted on the same port; with
  ``--static DIR``, ``--auth`` or ``--origin`` an in-process ``synk.Gateway``
  (restartable on its port too) that serves ``DIR`` at ``/`` (and the JS
  client at ``/synk-client/``), for browser tests; with ``--auth`` its
  ``authenticate`` hook accepts only the tokens of ``--token`` and of the
  ``tokens`` command (``handshake.query["token"]``); ``--origin`` (repeatable)
  is its ``origins`` setting (with ``allow_own_origin=False``: only those pages);
  ``--inspect`` turns on the inspector at ``/inspect`` (``synk serve --inspect``,
  or the ``inspect`` setting of the in-process gateway); ``--deflate`` offers
  permessage-deflate (``synk serve --deflate``, or the ``deflate`` setting),
- a ``synk.World`` on the same Redis holding ``Agent`` objects, which the
  commands create, change and delete, and which an optional background
  simulation moves around.

Every answer has ``"ok"`` (and ``"seq"`` when the command had one); a failed
command answers ``{"ok": false, "error": "..."}`` and the harness carries on.
The first line, before any command, is ``{"ok": true, "ready": true, ...}``
with the gateway's and Redis's URLs.

Commands (``{"cmd": NAME, ...fields}``):

``create`` ``{id?, x?, y?, name?}``
    a new Agent (written with the next flush) → ``{id, sKey}``
``set`` ``{id, fields: {...}}``
    change fields of an agent (next flush) → ``{sKey}``, its key after the change
``delete`` ``{id}``
    delete an agent (next flush)
``flush``
    ``await world.flush()`` → ``{writes}``
``state`` ``{keys: [...]}``
    what the store holds in these keys → ``{objects: {id: {sKey, v, i, state}}}``
``gateway_url``
    → ``{url, http}``: the websocket URL and the page URL
``stop_gateway`` / ``start_gateway`` / ``restart_gateway``
    SIGTERM the gateway subprocess (→ ``{code}``, its exit code; the
    in-process gateway stops with its clients closed, code null) / start it
    again on the same port / both
``tokens`` ``{tokens: [...]}``
    (``--auth``) the tokens the gateway accepts from now on → ``{}``
``admissions``
    → ``{handshakes, refused: {code: n}, tokens: [...]}``: the websocket
    handshakes the in-process gateway has seen, how many it refused by close
    code (4401, 4403), and the ``token`` query parameter of each (null when
    absent), in order
``restart_redis``
    restart redis-server on the same port: its data is lost. The harness then
    re-creates its agents from their last-known state in a fresh World: new
    synk objects with the same ids, so new incarnations whose versions start
    again at 1 → ``{recreated}``
``reset_store``
    the same without a restart: FLUSHDB while every connection stays up, so
    the gateway notices nothing and clients only see the new incarnations'
    ``add`` messages → ``{recreated}``
``start_sim`` ``{ids?, bounds: [x0, y0, x1, y1], step?, hz?}``
    move the agents ``ids`` (default: all) by up to ``step`` per tick within
    ``bounds`` (x0 <= x < x1), flushing every tick, in the background
``sim``
    → ``{ticks, running}``
``stop_sim``
    stop the simulation after its current tick → ``{ticks}``
``quit``
    stop everything and exit (also on end of input and on SIGTERM)
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import random
import re
import signal
import sys
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, urlsplit

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

import synk  # noqa: E402
from bench.redis_process import RedisProcess  # noqa: E402
from synk.gateway import Gateway  # noqa: E402

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

log = logging.getLogger("harness")

#: World units per chunk side: an agent at (x, y) is in key ``world:{x//16}|{y//16}``.
CHUNK = 16
HOST = "127.0.0.1"
#: How the gateway subprocess says where it listens (``synk.cli``).
LISTENING = re.compile(r"synk gateway on (ws://\S+/) serving")
GATEWAY_START_TIMEOUT = 20.0


class Agent(synk.Object):
    """The objects of the test world: a position and a name."""

    type_key = "agent"
    x: int = 0
    y: int = 0
    name: str = ""

    @property
    def sub_key(self) -> str:
        return f"world:{self.x // CHUNK}|{self.y // CHUNK}"


class CommandError(Exception):
    """A command the harness refuses; its text is the answer's ``error``."""


class GatewayProcess:
    """``synk serve`` as a subprocess, restartable on the port it first got."""

    def __init__(self, redis_url: str, extra: list[str] | None = None) -> None:
        self.redis_url = redis_url
        #: more ``synk serve`` options (``--inspect``)
        self.extra = extra or []
        self.port = 0
        self.url = ""
        self.proc: asyncio.subprocess.Process | None = None
        self._echo: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Start and wait for its "synk gateway on ws://..." line.

        The first start asks for port 0 and keeps the port it printed; later
        starts reuse it, retrying while the old socket is not released yet.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + GATEWAY_START_TIMEOUT
        while True:
            try:
                await self._start_once(deadline)
                return
            except CommandError:
                if self.port == 0 or loop.time() > deadline:
                    raise
                await asyncio.sleep(0.1)

    async def _start_once(self, deadline: float) -> None:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "synk.cli",
            "serve",
            "--redis",
            self.redis_url,
            "--host",
            HOST,
            "--port",
            str(self.port),
            *self.extra,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=None,  # the harness's stderr: the test's log
        )
        assert proc.stdout is not None
        seen: list[str] = []
        loop = asyncio.get_running_loop()
        while True:
            try:
                raw = await asyncio.wait_for(proc.stdout.readline(), max(0.0, deadline - loop.time()))
            except TimeoutError:
                raw = b""
            if not raw:
                if proc.returncode is None:
                    proc.kill()
                code = await proc.wait()
                raise CommandError(f"the gateway exited ({code}) or printed no address on port {self.port}: {seen}")
            line = raw.decode(errors="replace").rstrip()
            seen.append(line)
            match = LISTENING.search(line)
            if match:
                break
        self.proc = proc
        self.url = match.group(1)
        self.port = int(self.url.rsplit(":", 1)[1].rstrip("/"))
        self._echo = asyncio.create_task(self._echo_stdout(proc))

    @staticmethod
    async def _echo_stdout(proc: asyncio.subprocess.Process) -> None:
        """Pass the rest of its stdout to our stderr, so its pipe never fills."""
        assert proc.stdout is not None
        async for raw in proc.stdout:
            print(f"[gateway] {raw.decode(errors='replace').rstrip()}", file=sys.stderr, flush=True)

    async def stop(self, timeout: float = 10.0) -> int | None:
        """SIGTERM, and the exit code (killed after ``timeout``); None if not running."""
        proc, self.proc = self.proc, None
        if proc is None:
            return None
        if proc.returncode is None:
            proc.terminate()
            try:
                await asyncio.wait_for(proc.wait(), timeout)
            except TimeoutError:
                log.error("the gateway ignored SIGTERM for %s s; killed", timeout)
                proc.kill()
                await proc.wait()
        if self._echo is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._echo, 5)
            self._echo = None
        return proc.returncode


class Admissions:
    """What the in-process gateway's ``admit`` decided, counted across restarts."""

    def __init__(self) -> None:
        self.handshakes = 0
        self.refused: Counter[str] = Counter()
        self.tokens: list[str | None] = []

    def wrap(self, gateway: Gateway) -> None:
        """Count every handshake ``gateway`` admits or refuses."""
        admit = gateway.admit

        async def counted(path: str, headers: dict[str, str], peer: str) -> tuple[int, Any]:
            refused, identity = await admit(path, headers, peer)
            self.handshakes += 1
            self.tokens.append(dict(parse_qsl(urlsplit(path).query)).get("token"))
            if refused:
                self.refused[str(refused)] += 1
            return refused, identity

        gateway.admit = counted  # type: ignore[method-assign]

    def report(self) -> dict[str, Any]:
        return {"handshakes": self.handshakes, "refused": dict(self.refused), "tokens": self.tokens}


class InProcessGateway:
    """A ``synk.Gateway`` in this process, restartable on the port it first got (a new Gateway each start)."""

    def __init__(
        self,
        redis_url: str,
        static_dir: Path | None,
        origins: list[str] | str | None,
        authenticate: Callable[[Any], Any] | None,
        inspect: bool = False,
        deflate: bool = False,
    ) -> None:
        self.redis_url = redis_url
        # --origin lists the only pages allowed: the gateway's own page is refused too (a test's disallowed origin).
        self.settings: dict[str, Any] = {
            "static_dir": static_dir,
            "origins": origins,
            "authenticate": authenticate,
            "allow_own_origin": False,
            "inspect": inspect,
            "deflate": deflate,
            # Every token the harness accepts is an admin's: the tests' inspector is theirs.
            "admin": (lambda _identity: True) if authenticate is not None else None,
        }
        self.admissions = Admissions()
        self.port = 0
        self.url = ""
        self.proc: contextlib.AsyncExitStack | None = None  # named as GatewayProcess's: set while running

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + GATEWAY_START_TIMEOUT
        while True:
            stack = contextlib.AsyncExitStack()
            gateway = Gateway(self.redis_url, **self.settings)
            self.admissions.wrap(gateway)
            try:
                server = await stack.enter_async_context(gateway.serve(HOST, self.port))
            except OSError:
                await stack.aclose()
                if self.port == 0 or loop.time() > deadline:
                    raise
                await asyncio.sleep(0.1)
                continue
            self.proc = stack
            self.port = server.port
            self.url = f"ws://{HOST}:{self.port}/"
            return

    async def stop(self) -> int | None:
        stack, self.proc = self.proc, None
        if stack is not None:
            await stack.aclose()
        return None


class Simulation:
    """Moves agents at random within a box, one flush per tick."""

    def __init__(self, harness: Harness, ids: list[str] | None, bounds: tuple[int, int, int, int], step: int, hz: float) -> None:
        self.harness = harness
        self.ids = ids
        self.bounds = bounds
        self.step = step
        self.period = 1.0 / hz
        self.ticks = 0
        self.rng = random.Random(7)
        self._stop = asyncio.Event()
        self.task = asyncio.create_task(self._run())

    def _move(self) -> None:
        x0, y0, x1, y1 = self.bounds
        agents = self.harness.agents
        for oid in self.ids if self.ids is not None else list(agents):
            agent = agents.get(oid)
            if agent is None:
                continue
            agent.x = min(max(agent.x + self.rng.randint(-self.step, self.step), x0), x1 - 1)
            agent.y = min(max(agent.y + self.rng.randint(-self.step, self.step), y0), y1 - 1)

    async def _run(self) -> None:
        while not self._stop.is_set():
            async with self.harness.lock:
                self._move()
                try:
                    await self.harness.world.flush()
                except synk.SynkError as exc:
                    log.error("simulation flush failed: %s", exc)
                self.ticks += 1
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), self.period)

    async def stop(self) -> None:
        """Stop after the current tick."""
        self._stop.set()
        await self.task


class Harness:
    """The state behind the commands: Redis, the gateway, the world and its agents."""

    def __init__(
        self,
        static_dir: Path | None,
        auth: bool = False,
        tokens: list[str] | None = None,
        origins: list[str] | str | None = None,
        inspect: bool = False,
        deflate: bool = False,
    ) -> None:
        self.static_dir = static_dir
        self.inspect = inspect
        self.deflate = deflate
        self.auth = auth
        #: with --auth: the tokens the gateway's authenticate hook accepts
        self.tokens: set[str] = set(tokens or [])
        self.origins = origins
        self.redis = RedisProcess()
        self.world: synk.World
        self.agents: dict[str, Agent] = {}
        #: taken by every command and every simulation tick: they never interleave
        self.lock = asyncio.Lock()
        self.sim: Simulation | None = None
        self.gateway: GatewayProcess | InProcessGateway | None = None
        self.ws_url = ""

    # -- lifecycle ------------------------------------------------------------------

    async def start(self) -> None:
        await asyncio.to_thread(self.redis.start)
        self.world = await synk.connect(self.redis.url, types=[Agent])
        if self.static_dir is None and not self.auth and self.origins is None:
            flags = (["--inspect"] if self.inspect else []) + (["--deflate"] if self.deflate else [])
            self.gateway = GatewayProcess(self.redis.url, flags)
        else:
            self.gateway = InProcessGateway(
                self.redis.url, self.static_dir, self.origins, self._authenticate if self.auth else None, self.inspect, self.deflate
            )
        await self.gateway.start()
        self.ws_url = self.gateway.url

    def _authenticate(self, handshake: Any) -> dict[str, str] | None:
        """The --auth hook: the identity ``{"token": ...}`` for an accepted token, else None (4401)."""
        token = handshake.query.get("token")
        return {"token": token} if token in self.tokens else None

    async def close(self) -> None:
        """Stop everything; safe to call more than once."""
        if self.sim is not None:
            await self.sim.stop()
            self.sim = None
        if self.gateway is not None:
            await self.gateway.stop()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.world.close(), 5)
        await asyncio.to_thread(self.redis.stop)

    def ready(self) -> dict[str, Any]:
        return {"ready": True, "url": self.ws_url, "redis": self.redis.url}

    # -- commands -------------------------------------------------------------------------

    def _agent(self, oid: object) -> Agent:
        agent = self.agents.get(oid) if isinstance(oid, str) else None
        if agent is None:
            raise CommandError(f"no agent {oid!r}")
        return agent

    def _gateway(self) -> GatewayProcess | InProcessGateway:
        if self.gateway is None:
            raise CommandError("no gateway")
        return self.gateway

    async def cmd_create(self, msg: dict[str, Any]) -> dict[str, Any]:
        fields = {k: msg[k] for k in ("x", "y", "name") if k in msg}
        agent = self.world.create(Agent(msg.get("id"), **fields))
        self.agents[agent.id] = agent
        return {"id": agent.id, "sKey": agent.sub_key}

    async def cmd_set(self, msg: dict[str, Any]) -> dict[str, Any]:
        agent = self._agent(msg.get("id"))
        fields = msg.get("fields")
        if not isinstance(fields, dict):
            raise CommandError("set needs fields: {...}")
        for name, value in fields.items():
            if name not in ("x", "y", "name"):
                raise CommandError(f"an agent has no field {name!r}")
            setattr(agent, name, value)
        return {"sKey": agent.sub_key}

    async def cmd_delete(self, msg: dict[str, Any]) -> dict[str, Any]:
        agent = self._agent(msg.get("id"))
        self.world.delete(agent)
        del self.agents[agent.id]
        return {}

    async def cmd_flush(self, msg: dict[str, Any]) -> dict[str, Any]:
        handle = self.world.flush()
        await handle
        return {"writes": handle.writes}

    async def cmd_state(self, msg: dict[str, Any]) -> dict[str, Any]:
        keys = msg.get("keys")
        if not isinstance(keys, list):
            raise CommandError("state needs keys: [...]")
        objects: dict[str, Any] = {}
        for key in keys:
            for stored in await self.world.store.snapshot(key):
                record = json.loads(stored.record)
                objects[stored.id] = {"sKey": key, "v": stored.version, "i": stored.token, "state": record["state"]}
        return {"objects": objects}

    async def cmd_gateway_url(self, msg: dict[str, Any]) -> dict[str, Any]:
        return {"url": self.ws_url, "http": "http" + self.ws_url.removeprefix("ws")}

    async def cmd_stop_gateway(self, msg: dict[str, Any]) -> dict[str, Any]:
        return {"code": await self._gateway().stop()}

    async def cmd_start_gateway(self, msg: dict[str, Any]) -> dict[str, Any]:
        gateway = self._gateway()
        if gateway.proc is not None:
            raise CommandError("the gateway is running")
        await gateway.start()
        return {"url": gateway.url}

    async def cmd_restart_gateway(self, msg: dict[str, Any]) -> dict[str, Any]:
        code = (await self.cmd_stop_gateway(msg))["code"]
        return {"code": code, **(await self.cmd_start_gateway(msg))}

    async def cmd_tokens(self, msg: dict[str, Any]) -> dict[str, Any]:
        tokens = msg.get("tokens")
        if not self.auth:
            raise CommandError("tokens needs --auth")
        if not (isinstance(tokens, list) and all(isinstance(t, str) for t in tokens)):
            raise CommandError("tokens needs tokens: [strings]")
        self.tokens = set(tokens)
        return {}

    async def cmd_admissions(self, msg: dict[str, Any]) -> dict[str, Any]:
        gateway = self._gateway()
        if not isinstance(gateway, InProcessGateway):
            raise CommandError("admissions are counted by the in-process gateway only (--static, --auth or --origin)")
        return gateway.admissions.report()

    async def _recreate(self) -> int:
        """Own new incarnations of every agent, same ids and last-known state, in a fresh World."""
        old = self.world
        with contextlib.suppress(Exception):
            await asyncio.wait_for(old.close(), 5)
        self.world = await synk.connect(self.redis.url, types=[Agent])
        self.agents = {oid: self.world.create(Agent(oid, **agent.state())) for oid, agent in self.agents.items()}
        await self.world.flush()
        return len(self.agents)

    async def cmd_restart_redis(self, msg: dict[str, Any]) -> dict[str, Any]:
        await asyncio.to_thread(self.redis.restart)
        return {"recreated": await self._recreate()}

    async def cmd_reset_store(self, msg: dict[str, Any]) -> dict[str, Any]:
        store = self.world.store
        redis = getattr(store, "redis", None)
        if redis is None:
            raise CommandError(f"reset_store needs a Redis store, not {type(store).__name__}")
        await redis.flushdb()
        return {"recreated": await self._recreate()}

    async def cmd_start_sim(self, msg: dict[str, Any]) -> dict[str, Any]:
        if self.sim is not None:
            raise CommandError("the simulation is running")
        bounds = msg.get("bounds")
        if not (isinstance(bounds, list) and len(bounds) == 4 and all(isinstance(b, int) for b in bounds)):
            raise CommandError("start_sim needs bounds: [x0, y0, x1, y1] (integers)")
        ids = msg.get("ids")
        self.sim = Simulation(self, ids, (bounds[0], bounds[1], bounds[2], bounds[3]), int(msg.get("step", 3)), float(msg.get("hz", 20)))
        return {}

    async def cmd_sim(self, msg: dict[str, Any]) -> dict[str, Any]:
        return {"ticks": self.sim.ticks if self.sim else 0, "running": self.sim is not None}

    async def cmd_stop_sim(self, msg: dict[str, Any]) -> dict[str, Any]:
        sim, self.sim = self.sim, None
        if sim is None:
            raise CommandError("no simulation is running")
        await sim.stop()
        return {"ticks": sim.ticks}

    # -- the command loop ---------------------------------------------------------------------

    def handler(self, name: object) -> Callable[[dict[str, Any]], Awaitable[dict[str, Any]]] | None:
        if not isinstance(name, str) or not name.isidentifier():
            return None
        found: Callable[[dict[str, Any]], Awaitable[dict[str, Any]]] | None = getattr(self, f"cmd_{name}", None)
        return found

    async def run(self, lines: asyncio.StreamReader) -> None:
        """Answer commands until ``quit`` or the end of input."""
        while True:
            raw = await lines.readline()
            if not raw:
                return
            if not raw.strip():
                continue
            try:
                msg = json.loads(raw)
                if not isinstance(msg, dict):
                    raise CommandError("a command is a JSON object")
            except (ValueError, CommandError) as exc:
                answer({"ok": False, "error": f"bad command line: {exc}"})
                continue
            reply: dict[str, Any] = {"seq": msg["seq"]} if "seq" in msg else {}
            name = msg.get("cmd")
            if name == "quit":
                answer({**reply, "ok": True})
                return
            handler = self.handler(name)
            if handler is None:
                answer({**reply, "ok": False, "error": f"unknown command {name!r}"})
                continue
            try:
                if name in ("stop_sim", "sim"):
                    result = await handler(msg)  # the simulation's tick holds the lock
                else:
                    async with self.lock:
                        result = await handler(msg)
            except Exception as exc:  # answered, so that the test sees it and the harness goes on
                log.warning("command %s failed: %s", name, exc, exc_info=not isinstance(exc, CommandError))
                answer({**reply, "ok": False, "error": f"{type(exc).__name__}: {exc}"})
                continue
            answer({**reply, "ok": True, **result})


def answer(message: dict[str, Any]) -> None:
    """Write one answer line to stdout."""
    sys.stdout.write(json.dumps(message) + "\n")
    sys.stdout.flush()


async def stdin_reader() -> asyncio.StreamReader:
    """Standard input as an asyncio stream."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    return reader


async def main(
    static_dir: Path | None,
    auth: bool = False,
    tokens: list[str] | None = None,
    origins: list[str] | str | None = None,
    inspect: bool = False,
    deflate: bool = False,
) -> None:
    harness = Harness(static_dir, auth, tokens, origins, inspect, deflate)
    loop = asyncio.get_running_loop()
    commands = asyncio.current_task()
    assert commands is not None
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, commands.cancel)
    try:
        await harness.start()
        answer({"ok": True, **harness.ready()})
        await harness.run(await stdin_reader())
    except asyncio.CancelledError:
        log.info("harness stopped by a signal")
    finally:
        await harness.close()


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--static", type=Path, default=None, help="run the gateway in-process, serving this folder at /")
    parser.add_argument(
        "--auth",
        action="store_true",
        help="run the gateway in-process, its authenticate hook accepting the tokens of --token and of the tokens command",
    )
    parser.add_argument("--token", action="append", default=None, help="a token --auth accepts from the start (repeatable)")
    parser.add_argument("--origin", action="append", default=None, help="the in-process gateway's origins (repeatable; '*': any)")
    parser.add_argument("--inspect", action="store_true", help="serve the inspector at /inspect (synk serve --inspect)")
    parser.add_argument("--deflate", action="store_true", help="offer permessage-deflate (synk serve --deflate)")
    return parser.parse_args()


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("websockets").setLevel(logging.WARNING)
    args = parse_args()
    origins: list[str] | str | None = args.origin
    if origins == ["*"]:
        origins = "*"
    asyncio.run(main(args.static.resolve() if args.static else None, args.auth, args.token, origins, args.inspect, args.deflate))
