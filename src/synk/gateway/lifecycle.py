"""The gateway's lifecycle as a state machine (pure: no I/O, no asyncio).

:class:`Lifecycle` is told what was asked (``start``, ``close``) and what
happened (``opened``, ``failed``, ``released``, ``subscriber_ended``) and
answers with the :class:`Step` the caller must take, in the manner of the
websockets library's sans-I/O protocol objects. The gateway does the I/O;
tests feed events and compare the steps.
"""

from __future__ import annotations

import enum

__all__ = ["Lifecycle", "State", "Step"]


class State(enum.Enum):
    """Where the gateway is in its life."""

    #: not started, or closed (a failed start comes back here: the next start tries again)
    IDLE = "idle"
    #: opening the store and the subscriber
    STARTING = "starting"
    RUNNING = "running"
    #: closing clients, the subscriber and the store
    CLOSING = "closing"


class Step(enum.Enum):
    """What the caller must do next."""

    #: nothing: already in the state asked for
    NOTHING = "nothing"
    #: open the store and the subscriber, then report ``opened`` or ``failed``
    OPEN = "open"
    #: another call is opening or closing: wait for it, then ask again
    WAIT = "wait"
    #: close the clients, the subscriber and the store, then report ``released``
    RELEASE = "release"
    #: the subscriber ended while running: open a new one and re-snapshot every key
    RESUBSCRIBE = "resubscribe"


class Lifecycle:
    """The gateway's lifecycle: a state and its transitions."""

    def __init__(self) -> None:
        self.state = State.IDLE

    def start(self) -> Step:
        """``Gateway.start()`` was called."""
        if self.state is State.IDLE:
            self.state = State.STARTING
            return Step.OPEN
        if self.state is State.RUNNING:
            return Step.NOTHING
        return Step.WAIT

    def opened(self) -> None:
        """The store and the subscriber are open."""
        self._expect(State.STARTING, "opened")
        self.state = State.RUNNING

    def failed(self) -> None:
        """Opening failed: nothing is left open, and the next start tries again."""
        self._expect(State.STARTING, "failed")
        self.state = State.IDLE

    def close(self) -> Step:
        """``Gateway.close()`` was called."""
        if self.state is State.RUNNING:
            self.state = State.CLOSING
            return Step.RELEASE
        if self.state is State.IDLE:
            return Step.NOTHING
        return Step.WAIT  # starting (close what it opened once it is done) or closing already

    def released(self) -> None:
        """Everything is closed and forgotten: a later start begins afresh."""
        self._expect(State.CLOSING, "released")
        self.state = State.IDLE

    def subscriber_ended(self) -> Step:
        """The subscriber's stream ended (or the fan-out over it failed)."""
        return Step.RESUBSCRIBE if self.state is State.RUNNING else Step.NOTHING

    def _expect(self, state: State, event: str) -> None:
        if self.state is not state:
            raise RuntimeError(f"gateway lifecycle: {event} while {self.state.value}, expected {state.value}")
