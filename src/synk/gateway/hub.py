"""The gateway's heart: sessions, key subscriptions and fan-out (snapshots under way: barriers.py).

Transports (``synk.gateway.ws`` for the standalone server, ``synk.gateway.asgi``
for Starlette or FastAPI) accept connections and hand each to
:meth:`Gateway.attach`; the gateway serves them all over one store
subscriber, here, with the snapshots under way in ``barriers.py``, the
fan-out's hot path in ``delivery.py`` and the write-outs in ``writeout.py``.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import itertools
import logging
import secrets
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import orjson

from synk.errors import ConnectionError as SynkConnectionError
from synk.errors import ProtocolError
from synk.gateway import admission, http, inspector, original
from synk.gateway import protocol as p
from synk.gateway.admission import maybe_await as _maybe
from synk.gateway.barriers import BARRIER, Barriers
from synk.gateway.compact import Compactor
from synk.gateway.config import GatewayConfig, GatewaySettings, Handshake
from synk.gateway.delivery import Delivery, Follower
from synk.gateway.freezer import Freezer
from synk.gateway.lifecycle import Lifecycle, Step
from synk.gateway.metrics import Metrics
from synk.gateway.pauses import Pauses
from synk.gateway.routing import Router
from synk.gateway.session import Client, Session
from synk.gateway.snapshots import KeyState, State
from synk.gateway.writeout import WriteOuts, WriterWatch
from synk.store import open_store

if TYPE_CHECKING:
    from collections.abc import AsyncIterator
    from typing import Unpack

    from synk.core.histogram import Histogram
    from synk.gateway.http import Response
    from synk.gateway.session import Outlet
    from synk.store.base import Store, Subscriber
    from synk.world import World

__all__ = ["Gateway", "GatewayConfig", "GatewaySettings", "Handshake"]

log = logging.getLogger("synk.gateway")

LIVE = State.LIVE
#: Events the fan-out takes at once, besides the one it waited for: runs of a key's
#: messages among them go to each client in one push.
READY_AT_ONCE = 1024

Handler = Callable[[Client, dict[str, Any]], Awaitable[None] | None]


class Gateway:
    """Serves the store's snapshots and messages to websocket clients.

    ``Gateway(world_or_url, **settings)``: a ``synk.World`` (its store is
    shared, which is how ``memory://`` serves a simulation in the same
    process) or a store URL, and keyword settings: ``origins``,
    ``authenticate``, ``authorize``, ``forward_to_world``, ``static_dir``
    and the limits, each described (with its default) on
    :class:`synk.gateway.GatewayConfig` and in docs/gateway.md. A name
    that is not a setting, or a value of the wrong kind, raises
    ``synk.ConfigError`` naming it. Run the gateway with :meth:`serve` or
    mount :meth:`asgi_app` in an ASGI application.
    """

    def __init__(self, source: World | Store | str, *, prefix: str = "synk:", **settings: Unpack[GatewaySettings]) -> None:
        flushes: Histogram | None = None
        if isinstance(source, str):
            self.store: Store = open_store(source, prefix=prefix)
            self._owns_store = True
        elif hasattr(source, "store"):
            self.store = source.store
            self._owns_store = False
            flushes = getattr(source, "flush_seconds", None)
        else:
            self.store = source
            self._owns_store = False
        self.config = GatewayConfig.from_settings(dict(settings))
        #: it listens on loopback only (set by serve()): its own names are then the loopback ones
        self._on_loopback = False
        self.metrics = Metrics()
        if flushes is not None:
            self.metrics.extra.append(flushes)  # the world runs here: its flushes show on /metrics
        #: loop stalls and full garbage collections, while started
        self.pauses = Pauses()
        #: one timer for every client's running writer task (stuck writes, idle writers)
        self._watch = WriterWatch(min(1.0, self.config.stuck_timeout / 4))
        #: freezes the survivors of full garbage collections (the ``gc_freeze`` setting)
        self.freezer = Freezer(lambda: len(self.sessions))
        self.metrics.extra += [self.pauses.lag, self.pauses.gc]
        self.router: Router[Follower] = Router()
        #: the handles of compact clients' objects, and each message's compact form (compact.py)
        self.compactor = Compactor(lambda key: key in self._compact_followers)
        #: key -> how many compact clients follow it (its handles go when none does)
        self._compact_followers: collections.Counter[str] = collections.Counter()
        self.sessions: dict[str, Session] = {}
        #: the hot path: each key's messages to its clients (delivery.py)
        self._delivery = Delivery(self.router, self.metrics, lambda session, key: self._barriers.snapshot(session, [key]))
        self._handlers: dict[str, Handler] = {}
        self._subscriber: Subscriber | None = None
        self._pump: asyncio.Task[None] | None = None
        self._counter = itertools.count(1)
        self._life = Lifecycle()
        #: set when the start or close under way is done
        self._transition: asyncio.Future[None] | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        #: one write-out per burst (at most once per ``write_interval``) of the sessions with messages queued
        self._write_outs = WriteOuts(lambda: self.config.write_interval)
        #: the snapshots under way: reads, barriers, parked keys (barriers.py)
        self._barriers = Barriers(
            self.store, self.config, self.metrics, subscriber=lambda: self._subscriber, spawn=self._spawn, refuse=self._refuse
        )

    # -- lifecycle ---------------------------------------------------------------

    async def start(self) -> None:
        """Open the store and the shared subscriber (idempotent; after a failure, tries again)."""
        while True:
            step = self._life.start()
            if step is Step.NOTHING:
                return
            if step is Step.OPEN:
                break
            assert self._transition is not None  # set whenever starting or closing
            await asyncio.shield(self._transition)  # another call is starting or closing
        self._transition = transition = asyncio.get_running_loop().create_future()
        try:
            if self._owns_store:
                await self.store.open()
            self._subscribe()
            self.pauses.start()
            if self.config.gc_freeze:
                self.freezer.start()
        except BaseException:
            self._life.failed()
            raise
        else:
            self._life.opened()
        finally:
            transition.set_result(None)

    def _subscribe(self) -> None:
        """A new store subscriber, and the fan-out task over it."""
        self._subscriber = subscriber = self.store.subscriber()
        self._pump = asyncio.create_task(self._fan_out(subscriber))
        self._pump.add_done_callback(self._pump_ended)

    def _pump_ended(self, task: asyncio.Task[None]) -> None:
        if task.cancelled() or self._pump is not task:
            return
        exc = task.exception()
        if exc is not None:
            log.error("synk gateway fan-out failed; subscribing afresh", exc_info=exc)
        if self._life.subscriber_ended() is Step.RESUBSCRIBE:
            # Without it every client would wait forever: re-subscribe every
            # key on a new subscriber and re-snapshot them.
            old = self._subscriber
            if old is not None:
                self._spawn(old.close())
            self._barriers.reset()
            self._subscribe()
            for session in list(self.sessions.values()):
                self._barriers.resnapshot_all(session)

    async def close(self) -> None:
        """Close every client with 1001, then release the store; a later start begins afresh."""
        while True:
            step = self._life.close()
            if step is Step.NOTHING:
                return
            if step is Step.RELEASE:
                break
            assert self._transition is not None
            await asyncio.shield(self._transition)
        self._transition = transition = asyncio.get_running_loop().create_future()
        try:
            await asyncio.gather(*(s.close(p.CLOSE_GOING_AWAY, "gateway shutting down") for s in list(self.sessions.values())))
            for task in list(self._tasks):
                task.cancel()
            pump, self._pump = self._pump, None
            subscriber, self._subscriber = self._subscriber, None
            if subscriber is not None:
                await subscriber.close()
            if pump is not None:
                pump.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await pump
            if self._owns_store:
                await self.store.close()
        finally:
            # Nothing of this run may leak into the next: a later attach
            # starts again on fresh futures.
            self._barriers.reset()
            self._barriers.reads.clear()
            self._write_outs.clear()
            self.pauses.stop()
            self.freezer.stop()
            self._watch.stop()
            self._life.released()
            transition.set_result(None)

    def on(self, method: str) -> Callable[[Handler], Handler]:
        """Register a handler for a custom client method: ``@gateway.on("chat")``.

        It is called with the :class:`Client` and the message's fields, and
        may answer with ``client.send({...})``.
        """

        def register(fn: Handler) -> Handler:
            self._handlers[method] = fn
            return fn

        return register

    # -- transports ----------------------------------------------------------------

    def serve(self, host: str = "127.0.0.1", port: int = 8765, *, reuse_port: bool = False) -> Any:
        """The standalone websocket server: ``async with gateway.serve(host, port) as server``.

        ``reuse_port``: listen with SO_REUSEPORT, so that several gateway
        processes share the port and the kernel spreads connections across
        them (what ``synk serve --workers N`` does).

        Bound beyond the loopback interface with no ``origins`` given, it
        warns: the default admits a page whose Origin matches the request's
        Host header, which a DNS-rebinding page can arrange (docs/gateway.md).
        """
        from synk.gateway.ws import serve

        self._on_loopback = admission.loopback(host)
        if self.config.origins is None and not admission.loopback(host):
            log.warning(
                "synk gateway listens on %s with no origins set: pages are admitted when their Origin matches the Host"
                " header, which a DNS-rebinding page can arrange; list your pages' origins (origins=[...], --origin)",
                host,
            )
        return serve(self, host, port, reuse_port=reuse_port)

    def asgi_app(self) -> Any:
        """An ASGI application serving websockets, ``/metrics`` and the client files.

        Mounted in Starlette or FastAPI, it gets no lifespan events (Starlette
        sends them to the top-level app only): start and close the gateway in
        the app's lifespan, ``lifespan=gateway.lifespan``. To serve it at a
        path, :meth:`asgi_routes` accepts the websocket URL with and without
        its trailing slash.
        """
        from synk.gateway.asgi import AsgiApp

        return AsgiApp(self)

    def asgi_routes(self, path: str) -> list[Any]:
        """Starlette (or FastAPI) routes serving the gateway at ``path``: ``ws://HOST/sync``
        and ``ws://HOST/sync/`` alike, and the client's files and ``/metrics`` below it.

        ``Starlette(routes=gateway.asgi_routes("/sync"), lifespan=gateway.lifespan)``,
        or ``app.routes.extend(gateway.asgi_routes("/sync"))`` in FastAPI. Needs Starlette.
        """
        from starlette.routing import Mount, WebSocketRoute

        from synk.gateway.asgi import AsgiApp

        app = AsgiApp(self)
        base = "/" + path.strip("/")
        if base == "/":
            return [Mount("", app=app)]
        # A Mount matches below its path only: the bare path needs a route of its own.
        return [WebSocketRoute(base, app), Mount(base, app=app)]

    @contextlib.asynccontextmanager
    async def lifespan(self, _app: Any = None) -> AsyncIterator[None]:
        """Starts the gateway and closes it: an ASGI app's lifespan (``Starlette(lifespan=gateway.lifespan)``)."""
        await self.start()
        try:
            yield
        finally:
            await self.close()

    async def admit(self, path: str, headers: dict[str, str], peer: str) -> tuple[int, Any]:
        """Whether a websocket handshake may go on: ``(0, identity)``, else ``(close code, None)``.

        ``headers`` have lowercase names. A refused connection is accepted
        and closed at once with 4403 (its page's origin is not allowed) or
        4401 (``authenticate`` refused it): a close code a browser can read
        and a client can stop on, unlike a refused handshake's HTTP status.
        Nothing is served before the close. Each refusal is logged at INFO.
        """
        origin = headers.get("origin")
        if not admission.origin_allowed(self.config.origins, origin, headers.get("host"), self.config.allow_own_origin, self.trusted_hosts):
            log.info("synk gateway refused a connection from %s: origin %r is not allowed (path %s)", peer, origin, path.split("?", 1)[0])
            return p.CLOSE_FORBIDDEN, None
        ok, identity = await admission.authenticate(self.config.authenticate, Handshake(path, headers, peer))
        if not ok:
            log.info(
                "synk gateway refused a connection from %s: authenticate refused it (origin %r, path %s)",
                peer,
                origin,
                path.split("?", 1)[0],
            )
            return p.CLOSE_UNAUTHORIZED, None
        return 0, identity

    async def http(self, method: str, path: str, headers: dict[str, str], peer: str = "") -> Response:
        """The answer to a plain HTTP request (``headers`` with lowercase names): ``/metrics``,
        the JS client's files (with CORS for allowed pages), ``static_dir``; see ``synk.gateway.http``.

        ``/metrics`` is served as the ``metrics`` setting says: to anyone, to
        requests ``authenticate`` accepts (the token or header a connection
        would need), or not at all.
        """
        local = path.split("?", 1)[0]
        trusted = self.trusted_hosts
        private = local == "/metrics" or (self.config.inspect and (local == "/inspect" or local.startswith("/inspect/")))
        if private and not admission.host_trusted(headers.get("host"), trusted):
            log.info("synk gateway refused %s to %s: host %r is not one of its names", local, peer, headers.get("host"))
            return http.wrong_host(headers.get("host"))
        if self.config.inspect and (local == "/inspect" or local.startswith("/inspect/")):
            return await inspector.respond(self, method, path, headers, peer)
        metrics: str | None = None
        if local == "/metrics" and self.config.metrics != "off":
            if self.config.metrics == "authenticated":
                refusal = await self.admit_admin(path, headers, peer)
                if refusal is not None:
                    return refusal
            metrics = self.metrics.render()
        return http.respond(self.config, metrics, method, path, headers, trusted)

    @property
    def trusted_hosts(self) -> frozenset[str] | None:
        """The Host names taken as this gateway's own: the ``hosts`` setting, else the
        loopback names when it listens on loopback only, else None (any)."""
        if self.config.hosts is not None:
            return frozenset(h.lower() for h in self.config.hosts)
        return admission.LOOPBACK_NAMES if self._on_loopback else None

    async def admit_admin(self, path: str, headers: dict[str, str], peer: str) -> Response | None:
        """None if the request may see the gateway's insides (``/inspect``, guarded ``/metrics``),
        else the refusal: 401 without what ``authenticate`` accepts, 403 when ``admin`` says no."""
        if self.config.authenticate is None:
            return None
        ok, identity = await admission.authenticate(self.config.authenticate, Handshake(path, headers, peer))
        if not ok:
            log.info("synk gateway refused %s to %s: authenticate refused it", path.split("?", 1)[0], peer)
            return http.unauthorized()
        hook = self.config.admin
        if hook is None:
            return None
        try:
            allowed = await _maybe(hook(identity))
        except Exception:
            log.exception("synk admin hook raised; refused")
            allowed = False
        if not allowed:
            log.info("synk gateway refused %s to %s: admin refused its identity", path.split("?", 1)[0], peer)
            return http.Response(403, [("content-type", "text/plain; charset=utf-8")], b"forbidden: not an admin\n")
        return None

    async def attach(self, outlet: Outlet, identity: Any, frames: AsyncIterator[str | bytes], path: str = "/") -> None:
        """Serve one connection until ``frames`` ends; the transport calls this.

        ``path`` is the request's path and query: ``synk_resnap=1`` in it
        declares a client that takes ``snap``, ``resnap`` and an ``add`` of
        an object it holds, ``synk_batch=1`` one that takes batch frames,
        ``synk_compact=1`` (with ``synk_resnap=1``) one that takes compact
        mods (PROTOCOL.md).
        """
        await self.start()
        cid = f"{next(self._counter)}-{secrets.token_hex(4)}"
        session = Session(
            cid,
            identity,
            outlet,
            self.metrics,
            max_backlog_bytes=self.config.max_backlog_bytes,
            max_backlog_messages=self.config.max_backlog_messages,
            stuck_timeout=self.config.stuck_timeout,
            rate=self.config.rate,
            burst=self.config.burst,
            key_rate=self.config.key_rate,
            key_burst=float(self.config.key_burst or 0),
            on_lag=self._barriers.resnapshot_all,
            on_dirty=self._write_outs.mark,
            watch=self._watch,
        )
        query = Handshake(path, {}).query
        session.resnap = query.get("synk_resnap") == "1"
        session.batch = query.get("synk_batch") == "1"
        if session.resnap and query.get("synk_compact") == "1":
            session.compact = self.compactor
        self.sessions[cid] = session
        self.metrics.clients = len(self.sessions)
        session.push(p.encode_hello(cid))
        try:
            async for frame in frames:
                await self._receive(session, frame)
        finally:
            del self.sessions[cid]
            self.metrics.clients = len(self.sessions)
            try:
                await session.stop()
            finally:
                # Even when cancelled in stop(): the router would otherwise keep the
                # session (its backlog, its outlet) for good. The router entries go
                # before _unsubscribe's first await.
                await self._unsubscribe(session, list(session.keys))
                self.freezer.departed()

    # -- client messages -------------------------------------------------------------

    def _error(self, session: Session, code: str, reason: str) -> None:
        self.metrics.errors[code] += 1
        session.push(p.encode_error(code, reason))

    async def _receive(self, session: Session, frame: str | bytes) -> None:
        self.metrics.messages_in += 1
        self.metrics.bytes_in += len(frame)
        if not session.bucket.take(asyncio.get_running_loop().time()):
            self.metrics.errors[p.RATE_LIMITED] += 1  # every dropped message counts...
            if not session.throttled:  # ...but a flood gets one notice, not one reply per message
                session.throttled = True
                reason = f"more than {self.config.rate:g} messages a second; dropping them until fewer come"
                session.push(p.encode_error(p.RATE_LIMITED, reason))
            return
        session.throttled = False
        try:
            command = p.parse(frame, self.config.max_keys)
            asked = (
                len(command.add) if isinstance(command, p.UpdateSubscription) else len(command.keys) if isinstance(command, p.Resync) else 0
            )
            if asked and not session.key_bucket.take(asyncio.get_running_loop().time(), asked):
                # Frames are cheap; snapshots are not: one resync of 1,000 keys
                # is 1,000 reads and publishes. Refused whole, like a dropped frame.
                raise ProtocolError(
                    p.RATE_LIMITED,
                    f"{asked} keys asked with {int(session.key_bucket.tokens)} left"
                    f" of the budget of {self.config.key_rate:g} keys a second",
                )
            if isinstance(command, p.UpdateSubscription):
                await self._update(session, command)
            elif isinstance(command, p.Resync):
                missing = [k for k in command.keys if k not in session.keys]
                if missing:
                    raise ProtocolError(p.NOT_SUBSCRIBED, f"resync of {len(missing)} key(s) not subscribed, such as {missing[0]!r}")
                self._barriers.snapshot(session, command.keys)
            else:
                await self._custom(session, command)
        except ProtocolError as exc:
            self._error(session, exc.code, exc.reason)
        except Exception:
            log.exception("synk gateway failed on a message of client %s", session.id)
            self._error(session, p.INTERNAL, "the gateway failed to serve this message")

    async def _update(self, session: Session, command: p.UpdateSubscription) -> None:
        await self._unsubscribe(session, [k for k in command.remove if k in session.keys])
        add = [k for k in command.add if k not in session.keys]
        if len(session.keys) + len(add) > self.config.max_keys:
            raise ProtocolError(
                p.TOO_MANY_KEYS, f"{len(session.keys)} keys subscribed and {len(add)} more asked, over the limit of {self.config.max_keys}"
            )
        hook = self.config.authorize
        if hook is not None and add:
            allowed = []
            for key in add:
                try:
                    ok = await _maybe(hook(session.identity, key))
                except Exception:
                    log.exception("synk authorize hook raised; key refused")
                    ok = False
                if ok:
                    allowed.append(key)
                else:
                    self._error(session, p.FORBIDDEN, f"not allowed to subscribe to {key!r}")
            add = allowed
        for key in add:
            state = session.keys[key] = KeyState(key, self.config.max_backlog_messages)
            if self.router.add(session.id, key, (session, state)):
                self.metrics.keys = len(self.router)
            if session.compact is not None:
                self._compact_followers[key] += 1
        self._barriers.snapshot(session, add)

    async def _custom(self, session: Session, command: p.Custom) -> None:
        handler = self._handlers.get(command.method)
        if handler is None and not self.config.forward_to_world:
            raise ProtocolError(p.UNKNOWN_METHOD, f"no handler for method {command.method!r}")
        if handler is not None:
            await _maybe(handler(session.client, command.data))
        if self.config.forward_to_world:
            message = {"client": session.id, "identity": session.identity_json, "method": command.method, "data": command.data}
            try:
                await self.store.post(orjson.dumps(message))
            except SynkConnectionError as exc:
                # Not retried: it may have been stored (a reply lost, a replica
                # late), and a second post would reach the simulation twice.
                raise ProtocolError(
                    p.UNAVAILABLE, f"the store could not confirm it took method {command.method!r} ({exc}): it may not reach the simulation"
                ) from exc

    async def _unsubscribe(self, session: Session, keys: list[str]) -> None:
        gone = []
        for key in keys:
            state = session.keys.pop(key, None)
            if state is not None:
                if session.compact is not None:
                    self._compact_followers[key] -= 1
                    if not self._compact_followers[key]:
                        del self._compact_followers[key]
                        self.compactor.forget_key(key)
                self._barriers.forget(state)
                original.release_held(session, state.leave())
        if session.holding:
            for state in session.keys.values():
                for key in keys:
                    for oid in state.drop_held(key):
                        session.holding.pop(oid, None)
        if session.moves:
            session.push_many(session.moves_left(keys))
        for key in keys:
            if self.router.remove(session.id, key):
                gone.append(key)
                self._barriers.drop_live(key)
        self.metrics.keys = len(self.router)
        if gone and self._subscriber is not None:
            await self._subscriber.unsubscribe(gone)

    async def _refuse(self, session: Session, key: str) -> None:
        """The store will not serve ``key`` (refused for good): tell the client, and drop the key."""
        self._error(session, p.INTERNAL, f"the gateway cannot serve key {key!r}")
        await self._unsubscribe(session, [key])

    def _spawn(self, coro: Awaitable[Any]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- fan-out ----------------------------------------------------------------------------

    async def _fan_out(self, subscriber: Subscriber) -> None:
        async for first in subscriber:
            # What came with it (a flush publishes a key's messages together)
            # is handled as runs of one key's messages: a run goes to a live
            # client of synk's own in one push, joined once for all of them.
            events = [first, *subscriber.ready(READY_AT_ONCE)]
            i, n = 0, len(events)
            while i < n:
                event = events[i]
                key = event.key
                if key is None:
                    self._gap(event.gap)
                    i += 1
                    continue
                if event.data.startswith(BARRIER):
                    self._barriers.barrier(key, event.data)
                    i += 1
                    continue
                j = i + 1
                while j < n and events[j].key == key and not events[j].data.startswith(BARRIER):
                    j += 1
                if j == i + 1:
                    self._delivery.one(key, event.data)
                else:
                    self._delivery.run(key, [e.data for e in events[i:j]])
                i = j

    def _gap(self, gap: frozenset[str] | None) -> None:
        """The subscriber may have missed messages: of the keys in ``gap``, or of every key (None)."""
        self.metrics.store_reconnects += 1
        if gap is None:
            self._barriers.reset()
        for session in list(self.sessions.values()):
            self._barriers.resnapshot(session, gap)
