"""What the original synk-js client gets of a move (no I/O: session and key state in, pushes out).

The original client throws on an ``add`` of an object it holds and on a
version gap, so of a move's two messages (the old key's ``mod`` with
``nsKey``, the new key's ``add`` with ``psKey``) it must get exactly one.
synk's own client takes both, and none of this applies to it. While the
old key is being snapshotted, whether its ``mod`` reaches the client is
known only at that key's barrier: the ``add``, and the object's later
messages, wait for it there (``KeyState.hold``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from synk.gateway.routing import Routed
    from synk.gateway.session import Session
    from synk.gateway.snapshots import Released

__all__ = ["after_barrier", "release_held", "to_original"]


def to_original(session: Session, key: str, m: Routed) -> bytes | None:
    """What of message ``m`` of ``key`` goes to an original client now: its bytes, or None (held or dropped)."""
    oid = m.id
    if oid is None:
        return m.data
    holder_key = session.holding.get(oid)
    if holder_key is not None:
        holder = session.keys.get(holder_key)
        if holder is not None and not holder.live:
            holder.hold(key, m)  # after the add held there: keep the object's order
            return None
        del session.holding[oid]
    if m.prev_key is not None:
        old = session.keys.get(m.prev_key)
        if old is not None:
            if session.moved_out.get(oid) == (key, m.version):
                # Kept in case the client leaves the old key before the
                # mod reaches it (see Session.remember_move).
                session.remember_move(oid, m.prev_key, key, m.data)
                return None
            if not old.live:
                old.hold(key, m)
                session.holding[oid] = m.prev_key
                return None
    elif m.next_key is not None:
        session.note_moved_out(oid, m.next_key, m.version)
    return m.data


def release_held(session: Session, held: list[tuple[str, Routed]]) -> None:
    """The client left a key whose snapshot held other keys' messages: they go out now."""
    for key, m in held:
        if m.id is not None:
            session.holding.pop(m.id, None)
        state = session.keys.get(key)
        # (a key of theirs being snapshotted again brings the object anyway)
        if state is not None and state.live:
            session.push(m.data)


def after_barrier(session: Session, key: str, out: Released) -> None:
    """Key ``key``'s barrier came back to an original client: its replay, then the messages it held."""
    for _, m in out.held:
        if m.id is not None:
            session.holding.pop(m.id, None)  # decided below, not held any more
    for m in out.replayed:
        sent = to_original(session, key, m)
        if sent is not None:
            session.push(sent)
    for held_key, m in out.held:
        if held_key not in session.keys:
            continue
        if m.prev_key == key and m.id is not None and (m.id in out.ids or session.moved_out.get(m.id) == (held_key, m.version)):
            # The client has the move already: the object was in this
            # key's snapshot, and the replay brought its mod with nsKey.
            session.remember_move(m.id, key, held_key, m.data)
            continue
        # Not in the snapshot, and the mod did not go out: the add is the
        # client's only news of the object in its new key.
        session.push(m.data)
