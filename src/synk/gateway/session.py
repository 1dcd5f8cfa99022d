"""One connected client: its keys, its outbound backlog and its writer.

Transport-agnostic: an :class:`Outlet` (websockets or ASGI) moves the bytes.
Messages queued for a client between two writes leave in one write, and
the backlog is bounded: past the bound it is discarded and the client's
keys are re-snapshotted once its socket drains, so it converges without
reconnecting; a socket that stays stuck is closed with 4408.
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import logging

# The backlog's clock (its age, delivery times): asyncio's loop.time() is this same
# monotonic clock behind a Python method call, twice per delivery on the hot path.
from time import monotonic as _now
from typing import TYPE_CHECKING, Any

import orjson

from synk.gateway.limits import TokenBucket
from synk.gateway.writeout import WriterWatch

if TYPE_CHECKING:
    from collections.abc import Callable

    from synk.gateway.compact import Compactor
    from synk.gateway.metrics import Metrics
    from synk.gateway.snapshots import KeyState

__all__ = ["BATCH_FRAME_BYTES", "Client", "Outlet", "Session", "batch_frames"]

log = logging.getLogger("synk.gateway")

#: Left-out adds of moves a client keeps at most (see Session.remember_move).
MAX_MOVES = 4096


def json_identity(identity: Any) -> orjson.Fragment:
    """``identity`` as JSON for the simulation: values JSON cannot hold become strings
    (a datetime, a user object), so the simulation always gets something to tell clients apart."""
    if identity is None:
        return _NULL
    try:
        data = orjson.dumps(identity, default=str, option=orjson.OPT_NON_STR_KEYS)
    except (TypeError, orjson.JSONEncodeError):
        data = orjson.dumps(str(identity))
    # A copy of exactly its size: the bytes orjson returns keep the whole buffer it
    # wrote into (4 KB measured with tracemalloc), for as long as the client stays.
    return orjson.Fragment(bytes(memoryview(data)))


_NULL = orjson.Fragment(b"null")


#: Bytes of messages one batch frame holds at most (a client's write may take several):
#: a snapshot of a big key goes out in parts a client parses one at a time.
BATCH_FRAME_BYTES = 1 << 20


def batch_frames(items: list[bytes], messages: int, most: int = BATCH_FRAME_BYTES, *, size: int | None = None) -> list[bytes]:
    """The backlog of one write as batch frames, in order, each up to ``most`` bytes of messages.

    ``items`` are messages, or several messages joined by commas (a key's
    batch, joined once for every subscriber); ``messages`` counts them all.
    A batch frame is a JSON array of messages, or one message alone (PROTOCOL.md,
    "Batch frames"): one frame per write instead of one per message, so a frame
    header and a client-side frame event less per message. An item larger
    than ``most`` gets a frame of its own.
    """
    if messages == 1:
        return items
    if size is not None and size + len(items) + 1 <= most:
        # ``size``, the items' bytes, is known (the backlog counts them): they fit in one
        # frame, the common case, made without sizing each item.
        return [b"[%b]" % b",".join(items)]
    out: list[bytes] = []
    start, size = 0, 0
    for i, data in enumerate(items):
        if size and size + len(data) > most:
            out.append(b"[%b]" % b",".join(items[start:i]))
            start, size = i, 0
        size += len(data) + 1
    out.append(b"[%b]" % b",".join(items[start:]))
    return out


class Outlet(abc.ABC):
    """Moves a client's bytes: one implementation per transport."""

    @abc.abstractmethod
    async def write(self, batch: list[bytes]) -> None:
        """Send these messages (JSON text frames), in order, as one write where possible."""

    @abc.abstractmethod
    async def close(self, code: int, reason: str) -> None:
        """Close the connection with this close code."""

    def write_nowait(self, batch: list[bytes]) -> bool:
        """Send these messages now if that needs no waiting; False (the default) means use ``write``.

        True means taken: an outlet may finish a write in a task of its own
        (ASGI's, when the socket fills), before its next one starts."""
        return False


class Client:
    """What a custom-message handler sees of a client."""

    def __init__(self, session: Session) -> None:
        self._session = session

    @property
    def id(self) -> str:
        """The id the gateway gave this connection (sent to it in ``hello``)."""
        return self._session.id

    @property
    def identity(self) -> Any:
        """What ``authenticate(request)`` returned for this connection."""
        return self._session.identity

    @property
    def keys(self) -> list[str]:
        """The keys this client follows."""
        return list(self._session.keys)

    def send(self, message: dict[str, Any]) -> None:
        """Queue a JSON message for this client alone."""
        self._session.push(orjson.dumps(message))


class Session:
    """A client's state in the gateway."""

    # Slots: the fan-out reads a handful of these once per message and client,
    # from 1,000s of sessions (py-spy: the delivery loop's own lines were a
    # quarter of the gateway's user CPU); a slot is a fixed offset, an instance
    # dict a hash lookup, and the object is smaller.
    __slots__ = (
        "__weakref__", "_count", "_loop", "_marked", "_max_bytes", "_max_messages", "_on_dirty", "_on_lag",
        "_pending", "_pending_bytes", "_since", "_slack_bytes", "_slack_messages", "_stuck",
        "_stuck_hit", "_watch", "_writer", "_writing_since", "batch", "bucket", "client", "closed", "compact",
        "holding", "id", "identity", "identity_json", "key_bucket", "keys", "lagging", "metrics",
        "moved_out", "moves", "outlet", "resnap", "throttled",
    )  # fmt: skip

    def __init__(
        self,
        cid: str,
        identity: Any,
        outlet: Outlet,
        metrics: Metrics,
        *,
        max_backlog_bytes: int,
        max_backlog_messages: int,
        stuck_timeout: float,
        rate: float,
        burst: float,
        key_rate: float,
        key_burst: float,
        on_lag: Callable[[Session], None],
        on_dirty: Callable[[Session], None],
        watch: WriterWatch | None = None,
    ) -> None:
        self.id = cid
        self.identity = identity
        #: the identity as JSON, encoded once: it goes with each of the client's messages to the simulation
        self.identity_json = json_identity(identity)
        self.outlet = outlet
        self.metrics = metrics
        #: key -> its snapshot's state (live, or buffering while being snapshotted)
        self.keys: dict[str, KeyState] = {}
        self.bucket = TokenBucket(rate, burst, asyncio.get_running_loop().time())
        #: keys asked to be snapshotted: each costs a read and a publish, whatever the frames
        self.key_bucket = TokenBucket(key_rate, key_burst, asyncio.get_running_loop().time())
        #: messages are being dropped for the rate limit (the client was told once)
        self.throttled = False
        self.client = Client(self)
        #: the client declared (``?synk_resnap=1``) that it takes ``snap``, ``resnap`` and an
        #: ``add`` of an object it holds; the original synk-js client does not. The fan-out's
        #: hot path takes only these clients (the original one needs its messages judged)
        self.resnap = False
        #: the client declared (``?synk_batch=1``) that it takes batch frames: each write
        #: to it is one frame holding a JSON array of messages; the original client does not
        self.batch = False
        #: the client declared (``?synk_compact=1``) that it takes compact mods: the
        #: gateway's converter, which every message queued for it goes through (compact.py)
        self.compact: Compactor | None = None
        #: object id -> (old key, new key, the add with psKey left out for it): this client
        #: got the move as the mod with nsKey of the old key instead, unless it leaves
        #: the old key before that mod reached it (see :meth:`remember_move`); the original
        #: client only
        self.moves: dict[str, tuple[str, str, bytes]] = {}
        #: object id -> (new key, version) of the last mod with nsKey this client got (the
        #: original client only): the add with psKey of that move is then a duplicate
        self.moved_out: dict[str, tuple[str, int | None]] = {}
        #: object id -> the key whose snapshot holds the object's messages back (the
        #: original client only; see ``KeyState.hold``)
        self.holding: dict[str, str] = {}
        self._pending: list[bytes] = []
        #: messages in ``_pending`` (an item may hold several, see :meth:`push_joined`)
        self._count = 0
        self._pending_bytes = 0
        self._loop = asyncio.get_running_loop()
        #: when the backlog last went from empty to not (for the delivery latency)
        self._since = 0.0
        self._max_bytes = max_backlog_bytes
        self._max_messages = max_backlog_messages
        self._stuck = stuck_timeout
        self._on_lag = on_lag
        #: called on the first push after a write; the gateway then calls write_out() once per burst
        self._on_dirty = on_dirty
        self._marked = False
        #: how much of the backlog is snapshots, which the bound lets through
        self._slack_messages = 0
        self._slack_bytes = 0
        self.lagging = False
        self.closed = False
        #: the task that waits out a full socket, only while there is one: an idle
        #: client costs no task (10,000 idle clients, 10,000 tasks less)
        self._writer: asyncio.Task[None] | None = None
        self._watch = watch if watch is not None else WriterWatch(min(1.0, stuck_timeout / 4))
        #: when the writer's current write began (None: it is not writing)
        self._writing_since: float | None = None
        #: the watch found the current write stuck (and cancelled the writer)
        self._stuck_hit = False

    @property
    def backlog_messages(self) -> int:
        """Messages queued for this client and not yet written to its socket."""
        return self._count

    @property
    def backlog_bytes(self) -> int:
        """Bytes of the messages queued for this client."""
        return self._pending_bytes

    @property
    def lag(self) -> float:
        """Seconds the oldest message queued for this client has waited (0.0 with nothing queued)."""
        if not self._pending:
            return 0.0
        return max(0.0, _now() - self._since)

    def remember_move(self, oid: str, prev_key: str, key: str, data: bytes) -> None:
        """Keep the add (with psKey) left out for this client, until the move it names is settled.

        The original client only (``original.py``): synk's own gets both halves of a move.
        """
        moves = self.moves
        moves.pop(oid, None)  # re-inserted last: the dict stays oldest first
        moves[oid] = (prev_key, key, data)
        if len(moves) > MAX_MOVES:
            # A bound on memory; a client left without a move's add converges
            # at its next resync or reconnect.
            del moves[next(iter(moves))]

    def note_moved_out(self, oid: str, next_key: str, version: int | None) -> None:
        """This client got the mod with nsKey of ``oid`` at ``version``."""
        moved = self.moved_out
        moved.pop(oid, None)  # re-inserted last: the dict stays oldest first
        moved[oid] = (next_key, version)
        if len(moved) > MAX_MOVES:
            # A bound on memory: a move forgotten here lets its add through,
            # which the original client may throw on, and then reconnects.
            del moved[next(iter(moved))]

    def moves_left(self, keys: list[str]) -> list[bytes]:
        """The left-out adds of objects that moved out of ``keys``, which this client now leaves.

        The client may have dropped the old key's mod with nsKey (it had
        left the key already on its side), so the add is its only news of
        the object in the new key. Only adds into a key it follows live are
        returned: a key being snapshotted brings the object anyway.
        """
        gone = set(keys)
        out = []
        for oid, (prev_key, key, data) in list(self.moves.items()):
            if prev_key in gone:
                del self.moves[oid]
                state = self.keys.get(key)
                if state is not None and state.live:
                    out.append(data)
        return out

    def settle_move(self, oid: str, key: str, leaves: bool) -> None:
        """A message of ``oid`` in ``key`` reached this client: forget the left-out add it makes moot."""
        move = self.moves.get(oid)
        if move is None:
            return
        prev_key, new_key, _ = move
        # It left the key it moved to: that add is old news. Or the original
        # client got the mod with nsKey: an add now would be a duplicate, which
        # it throws on.
        if (key == new_key and leaves) or (key == prev_key and not self.resnap):
            del self.moves[oid]

    def push(self, data: bytes, count: int = 1) -> None:
        """Queue one message (or ``count`` of them joined by commas); drops the backlog if it passes its bound.

        The hot path of fan-out, once per message and client (a lagging client's is not converted).
        """
        if self.lagging or self.closed:
            return
        if self.compact is not None:
            data = self.compact.convert(data)
        self.push_converted(data, count)

    def push_joined(self, messages: list[bytes], joined: bytes) -> None:
        """Queue several messages, which ``joined`` holds joined by commas (made once for
        every subscriber): one item for a client that takes batch frames."""
        if not self.batch:
            for data in messages:
                self.push(data)
            return
        if self.compact is not None:
            self.push_converted(self.compact.convert_run(messages, joined), len(messages))
            return
        self.push(joined, len(messages))

    def push_converted(self, data: bytes, count: int = 1) -> None:
        """``push`` of what is in the client's form already: converted by the gateway's one
        ``Compactor``, once for all its compact clients (a message, or a key's run).

        The hot path of fan-out, once per message and client: locals over
        attribute reads (``python -m bench.hotpath``).
        """
        if self.lagging or self.closed:
            return
        pending = self._pending
        if not pending:
            self._since = _now()
        pending.append(data)
        size = self._pending_bytes = self._pending_bytes + len(data)
        messages = self._count = self._count + count
        if messages - self._slack_messages > self._max_messages or size - self._slack_bytes > self._max_bytes:
            # Falling behind: drop what is queued and stop queueing until the
            # socket drains, then re-snapshot. Memory stays bounded and the
            # other clients never wait for this one.
            self._take()
            self.lagging = True
            self.metrics.slow_resyncs += 1
        if not self._marked:
            self._marked = True
            self._on_dirty(self)

    def push_snapshot(self, batch: list[bytes]) -> None:
        """Queue a snapshot whole: it does not count against the backlog bound.

        A key may hold more objects than the bound allows messages; counting
        them would drop every snapshot of it, and the client would never
        converge. The snapshot is in memory already, so this bounds nothing.
        """
        if self.lagging or self.closed or not batch:
            return
        if self.compact is not None:
            batch = [self.compact.convert(data) for data in batch]
        size = sum(map(len, batch))
        if not self._pending:
            self._since = _now()
        self._pending.extend(batch)
        self._pending_bytes += size
        self._count += len(batch)
        self._slack_messages += len(batch)
        self._slack_bytes += size
        self._dirty()

    def _dirty(self) -> None:
        if not self._marked:
            self._marked = True
            self._on_dirty(self)

    def _take(self) -> tuple[list[bytes], int, int]:
        """The backlog, its size in bytes and its count of messages, leaving it empty."""
        batch, size, count = self._pending, self._pending_bytes, self._count
        self._pending, self._pending_bytes, self._count, self._slack_messages, self._slack_bytes = [], 0, 0, 0, 0
        return batch, size, count

    def _frames(self, batch: list[bytes], count: int) -> list[bytes]:
        return batch_frames(batch, count) if self.batch else batch

    def write_out(self) -> None:
        """Write the backlog now if the outlet takes it without waiting; else wake the writer task."""
        self._marked = False
        if self._writer is not None:
            # The writer task is in a write (an outlet may take several awaits for one):
            # it takes the backlog once that write is done, so nothing overtakes it.
            return
        if self.lagging and not self.closed:
            self._wake()  # the writer waits out the drain, then re-snapshots
            return
        batch = self._pending
        if not batch or self.closed:
            return
        count = self._count
        if self.outlet.write_nowait(batch_frames(batch, count, size=self._pending_bytes) if self.batch else batch):
            metrics = self.metrics
            metrics.messages_out += count
            metrics.bytes_out += self._pending_bytes
            metrics.delivery.observe(_now() - self._since)
            self._pending, self._pending_bytes, self._count, self._slack_messages, self._slack_bytes = [], 0, 0, 0, 0
        else:
            self._wake()

    def _wake(self) -> None:
        """Start the writer task, unless it runs: it writes until nothing is left, waiting out the socket."""
        if self.closed:
            return
        if self._writer is None:
            self._writer = self._loop.create_task(self._run())
            self._watch.add(self)

    def check(self, now: float) -> None:
        """The watch's look at this writer: cancel a write stuck past ``stuck_timeout``."""
        writer = self._writer
        if writer is None or self.closed:
            return  # (closed: stop() cancels it, which is not a stuck write)
        if self._writing_since is not None and now - self._writing_since > self._stuck and not self._stuck_hit:
            self._stuck_hit = True
            writer.cancel()

    def push_many(self, batch: list[bytes]) -> None:
        """Queue several messages."""
        for data in batch:
            self.push(data)

    async def _run(self) -> None:
        try:
            # Until nothing is queued and the client is not lagging: a push while
            # this awaits the socket is taken by the next turn of the loop.
            while not self.closed and (self._pending or self.lagging):
                since = self._since
                batch, size, count = self._take()
                # The watch cancels a write that takes longer than stuck_timeout.
                self._writing_since = self._loop.time()
                try:
                    if batch:
                        await self.outlet.write(self._frames(batch, count))
                        self.metrics.messages_out += count
                        self.metrics.bytes_out += size
                        self.metrics.delivery.observe(_now() - since)
                    elif self.lagging:
                        await self.outlet.write([])
                finally:
                    self._writing_since = None
                if self.lagging and not self._pending:
                    self.lagging = False
                    self._on_lag(self)
        except asyncio.CancelledError:
            if not self._stuck_hit:
                raise  # stopped: the connection is gone
            # The watch cancelled a write stuck past stuck_timeout (the cancel may
            # land just after it, at the next wait: it was that late anyway).
            asyncio.current_task().uncancel()  # type: ignore[union-attr]
            self.metrics.slow_closes += 1
            await self.close(4408, "client too slow to drain its backlog")
        except (ConnectionError, OSError):
            self.closed = True
        except Exception:
            log.exception("synk gateway writer of client %s failed", self.id)
            self.closed = True
        finally:
            if self._writer is asyncio.current_task():
                self._writer = None
                self._watch.discard(self)

    async def close(self, code: int, reason: str) -> None:
        """Stop writing and close the connection."""
        if self.closed:
            return
        self.closed = True
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.outlet.close(code, reason), 5)

    async def stop(self) -> None:
        """Stop the writer (the connection is gone)."""
        self.closed = True
        writer = self._writer
        if writer is not None and writer is not asyncio.current_task():
            writer.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await writer
