"""A client's snapshot of one key, and the queue of snapshot reads (pure: no I/O, no asyncio).

:class:`KeyState` follows one (client, key) from the moment the client
subscribes until it leaves: the snapshot read, the barrier that closes the
window of messages racing with it, then the live stream. Its transitions
are methods told what happened, which answer with what to send, in the
manner of the websockets library's sans-I/O protocol objects.
:class:`ReadQueue` decides whose snapshot read goes next. The gateway does
the I/O; tests feed events and compare the output.
"""

from __future__ import annotations

import enum
from collections import deque
from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Generic, TypeVar

from synk.gateway import protocol as p
from synk.gateway.routing import Routed, replay_routed

if TYPE_CHECKING:
    from synk.store.base import Stored

__all__ = ["KeyState", "ReadQueue", "Released", "State"]


class State(enum.Enum):
    """Where a client's key is between subscribing and following it live."""

    #: a snapshot read is due or under way; messages of the key are buffered
    READING = "reading"
    #: the read is done and its barrier published; messages are buffered until the barrier returns
    BARRIER = "barrier"
    #: the read was dropped (too many barriers held); a fresh one is due, and messages are
    #: not kept meanwhile: that read covers them
    PARKED = "parked"
    #: the snapshot went out: every message of the key goes to the client as it comes
    LIVE = "live"
    #: the client left the key (or went away): nothing more of it is sent
    GONE = "gone"


@dataclass(frozen=True, slots=True)
class Released:
    """What a barrier releases: the snapshot (its adds then ``snap``) and the replayed messages after it.

    ``ids`` are the snapshot's objects, and ``held`` the messages of other
    keys held back until this barrier (see :meth:`KeyState.hold`), as
    (key, message), in order.
    """

    snapshot: list[bytes]
    replayed: list[Routed] = field(default_factory=list)
    ids: frozenset[str] = frozenset()
    held: list[tuple[str, Routed]] = field(default_factory=list)


class KeyState:
    """One client's key: its :class:`State`, the messages it buffers and the snapshot it holds.

    Each (re)start of the snapshot is an *epoch*: the read under way for an
    older epoch is stale (a resync or a backlog bound started it over) and
    its result is refused.
    """

    __slots__ = ("buffer", "epoch", "held", "key", "max_buffer", "state", "stored", "token")

    def __init__(self, key: str, max_buffer: int) -> None:
        self.key = key
        #: buffered messages past this many start the snapshot over (a fresh read covers them)
        self.max_buffer = max_buffer
        self.state = State.READING
        self.epoch = 0
        # Outside a snapshot window the two lists are the empty tuple: a live key
        # holds no list of its own (10 keys of 10,000 clients: 200,000 lists less).
        self.buffer: list[Routed] | tuple[()] = []
        self.stored: Sequence[Stored] = ()
        #: the barrier awaited while in BARRIER
        self.token: str | None = None
        #: messages of other keys held back until this key's barrier, as (key, message)
        self.held: list[tuple[str, Routed]] | tuple[()] = ()

    def __len__(self) -> int:
        """The messages buffered for the replay."""
        return len(self.buffer)

    @property
    def live(self) -> bool:
        """The snapshot went out: messages go to the client as they come."""
        return self.state is State.LIVE

    def snapshot(self) -> int:
        """Start a snapshot (again): buffer from now on. Returns the epoch the read must name."""
        if self.state is State.GONE:
            raise RuntimeError(f"key {self.key!r}: snapshot after the client left it")
        self.epoch += 1
        self.state = State.READING
        self.buffer = []
        self.stored = ()
        self.token = None
        return self.epoch

    def reading(self, epoch: int) -> bool:
        """Whether the read of ``epoch`` is still wanted."""
        return self.state is State.READING and self.epoch == epoch

    def read(self, epoch: int, stored: Sequence[Stored], token: str) -> bool:
        """The read of ``epoch`` is done and barrier ``token`` is about to be published.

        False: the read is stale (started over, or the client left), and the
        barrier must not be published.
        """
        if not self.reading(epoch):
            return False
        self.state = State.BARRIER
        self.stored = stored
        self.token = token
        return True

    def unread(self, epoch: int) -> None:
        """The barrier of ``epoch`` could not be published: the read is due again."""
        if self.state is State.BARRIER and self.epoch == epoch:
            self.state = State.READING
            self.stored = ()
            self.token = None

    def park(self) -> None:
        """The held barrier is dropped: forget the read and the buffer until :meth:`snapshot`."""
        if self.state in (State.READING, State.BARRIER):
            self.state = State.PARKED
            self.buffer = ()
            self.stored = ()
            self.token = None

    def message(self, routed: Routed) -> bool:
        """A message of the key while not live: buffered. True: past the bound, snapshot again."""
        if self.state in (State.READING, State.BARRIER):
            buffer = self.buffer
            if not isinstance(buffer, list):  # a window opens with a list (snapshot()): never here
                buffer = self.buffer = []
            buffer.append(routed)
            return len(buffer) > self.max_buffer
        return False

    def hold(self, key: str, routed: Routed) -> None:
        """Hold a message of another key until this key's barrier (or until the client leaves it).

        The original client must get only one of a move's two messages: the
        ``add`` with ``psKey`` of an object moving out of this key can only
        be judged once this key's snapshot and replay are known. Held across
        restarts of the snapshot.
        """
        held = self.held
        if not isinstance(held, list):
            held = self.held = []
        held.append((key, routed))

    def drop_held(self, key: str) -> set[str]:
        """Forget the held messages of ``key`` (the client left it); the ids they were about."""
        ids = {m.id for k, m in self.held if k == key and m.id is not None}
        self.held = [(k, m) for k, m in self.held if k != key] or ()
        return ids

    def barrier(self, token: str) -> Released | None:
        """Barrier ``token`` came back: what to send, and the key is live. None: not the one awaited."""
        if self.state is not State.BARRIER or token != self.token:
            return None
        stored = self.stored
        out = Released(
            [*(s.record for s in stored), p.encode_snap(self.key, [s.id for s in stored])],
            replay_routed(self.buffer, {s.id: (s.version, s.token) for s in stored}),
            frozenset(s.id for s in stored),
            list(self.held),
        )
        self.held = ()
        self.state = State.LIVE
        self.buffer = ()
        self.stored = ()
        self.token = None
        return out

    def leave(self) -> list[tuple[str, Routed]]:
        """The client left the key: nothing more of it. Returns the messages of other keys it held."""
        held, self.held = list(self.held), ()
        self.state = State.GONE
        self.buffer = ()
        self.stored = ()
        self.token = None
        return held


S = TypeVar("S", bound=Hashable)
T = TypeVar("T")


class ReadQueue(Generic[S, T]):
    """Snapshot reads, granted round-robin between clients, a few at once per client.

    ``ask(client, ticket)`` queues a read; ``done(client)`` reports one
    finished (or abandoned after its grant); ``cancel(client, ticket)``
    withdraws one not granted yet. Each returns the tickets granted by it,
    in order: the caller starts those reads. At most ``slots`` reads run at
    once, at most ``per_client`` of them for one client, and free slots go
    to the waiting clients in turn, so one client asking for a thousand
    keys delays another's single key by at most one read per client ahead
    of it, not by a thousand.
    """

    def __init__(self, slots: int, per_client: int) -> None:
        if slots < 1 or per_client < 1:
            raise ValueError(f"read queue needs at least 1 slot and 1 per client, got {slots} and {per_client}")
        self.slots = slots
        self.per_client = per_client
        self.running = 0
        self._running: dict[S, int] = {}
        self._waiting: dict[S, deque[T]] = {}
        #: clients with waiting reads, in the order of their next turn
        self._turns: deque[S] = deque()

    def __len__(self) -> int:
        """Reads waiting for a grant."""
        return sum(map(len, self._waiting.values()))

    def ask(self, client: S, ticket: T) -> list[T]:
        """Queue a read for ``client``."""
        waiting = self._waiting.get(client)
        if waiting is None:
            waiting = self._waiting[client] = deque()
            self._turns.append(client)
        waiting.append(ticket)
        return self._grant()

    def done(self, client: S) -> list[T]:
        """A granted read of ``client`` is over."""
        left = self._running.get(client, 0) - 1
        if left < 0:
            raise RuntimeError(f"read queue: done for a client with no read running ({client!r})")
        if left:
            self._running[client] = left
        else:
            del self._running[client]
        self.running -= 1
        return self._grant()

    def cancel(self, client: S, ticket: T) -> list[T]:
        """Withdraw a read not granted yet (a no-op for an unknown ticket)."""
        waiting = self._waiting.get(client)
        if waiting is not None and ticket in waiting:
            waiting.remove(ticket)
            if not waiting:
                del self._waiting[client]
                self._turns.remove(client)
        return self._grant()

    def _grant(self) -> list[T]:
        out: list[T] = []
        turns = self._turns
        # Each pass over the turns either grants or sets aside a client at its
        # cap, so this ends after at most len(turns) idle steps.
        idle = 0
        while self.running < self.slots and turns and idle < len(turns):
            client = turns[0]
            turns.rotate(-1)
            if self._running.get(client, 0) >= self.per_client:
                idle += 1
                continue
            idle = 0
            waiting = self._waiting[client]
            out.append(waiting.popleft())
            self._running[client] = self._running.get(client, 0) + 1
            self.running += 1
            if not waiting:
                del self._waiting[client]
                turns.remove(client)
        return out
