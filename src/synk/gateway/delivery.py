"""Delivery: a key's messages, as the store publishes them, to every client that follows the key.

The hot path of the gateway: once per message and client. The fan-out task
(``Gateway._fan_out``, hub.py) reads the store's subscription and hands each
key's messages here; barriers and gaps stay with it, since they touch
snapshot reads. A message reaches a client one of three ways: queued as it
is (synk's own client, live on the key: the common case, kept to a few
attribute reads and one call), made into what the original client
expects (``original.py``), or held by the key's snapshot state until its
snapshot is out (``snapshots.py``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from synk.gateway import original
from synk.gateway.routing import Routed, Router, route
from synk.gateway.snapshots import KeyState, State

if TYPE_CHECKING:
    from synk.gateway.metrics import Metrics
    from synk.gateway.session import Session

__all__ = ["Delivery", "Follower"]

LIVE = State.LIVE

#: What the router keeps of a (client, key): the client's session and its state of the key.
Follower = tuple["Session", KeyState]


class Delivery:
    """Delivers a key's messages to its clients, for one gateway."""

    def __init__(
        self,
        router: Router[Follower],
        metrics: Metrics,
        resync: Callable[[Session, str], None],
    ) -> None:
        #: who follows which key, as (session, its state of the key) (shared with the gateway, not copied)
        self._router = router
        self._metrics = metrics
        #: read the key's snapshot for the client again (its held messages passed their bound)
        self._resync = resync

    def run(self, key: str, messages: list[bytes]) -> None:
        """Messages of ``key`` that came together, in order."""
        self._metrics.store_messages += len(messages)
        joined: bytes | None = None
        routed: list[Routed | None] | None = None  # each message decoded once, if a client needs it
        for target, state in self._router.clients(key).values():
            # The hot path, as in one(): synk's own client, live on the key.
            if state.state is LIVE and target.resnap:
                if joined is None:
                    joined = b",".join(messages)
                target.push_joined(messages, joined)
                continue
            if target.closed:
                continue  # leaving, its keys not yet dropped
            if routed is None:
                routed = [None] * len(messages)
            for i, data in enumerate(messages):
                routed[i] = self._to(target, key, data, routed[i], state)

    def one(self, key: str, data: bytes) -> None:
        """One message of ``key``, to every client of the key."""
        self._metrics.store_messages += 1
        routed: Routed | None = None
        compacted: bytes | None = None  # its compact form, made once: every compact client shares one Compactor
        # Straight from the key to its followers' sessions and states: no lookup of
        # the client, then of its key, per message and client (py-spy: those lookups
        # and the checks were a third of the gateway's own time in bench.hotpath).
        for target, state in self._router.clients(key).values():
            # The hot path, once per message and client: synk's own client, live on
            # the key (a move's add left out, Session.moves, is the original client's only).
            if state.state is LIVE and target.resnap:
                if target.compact is None:
                    target.push(data)
                else:
                    # (Converting a move or a rem has side effects on the handles: they are
                    # the same whether they run once or once per client.)
                    if compacted is None:
                        compacted = target.compact.convert(data)
                    target.push_converted(compacted)
            elif not target.closed:  # (closed: leaving, its keys not yet dropped)
                routed = self._to(target, key, data, routed, state)

    def _to(self, target: Session, key: str, data: bytes, routed: Routed | None, state: KeyState) -> Routed | None:
        """Message ``data`` of ``key`` to one client, whose state of the key is ``state``;
        ``routed`` is its decoding if made already (returned, made or not)."""
        if state.live:
            if target.moves:
                if routed is None:
                    routed = route(data)
                if routed.id is not None:
                    target.settle_move(routed.id, key, routed.leaves)
            # Only a move needs decoding on the live path (and, for clients
            # with left-out adds or held messages, any message of an object).
            if not target.resnap and (target.holding or b'"psKey":' in data or b'"nsKey":' in data):
                # The original client must get one half of a move only.
                # synk's own client gets both: the mod may have been
                # published before it followed the old key, or the new
                # key's snapshot read between the two, and it drops the
                # add when it has the move.
                if routed is None:
                    routed = route(data)
                out = original.to_original(target, key, routed)
                if out is not None:
                    target.push(out)
                return routed
            target.push(data)
            return routed
        if routed is None:
            routed = route(data)
        if state.message(routed):
            # The snapshot is slow and the key busy: rather than
            # hold its messages without bound, start it over (a
            # fresh read covers everything buffered so far).
            self._metrics.slow_resyncs += 1
            self._resync(target, key)
        return routed
