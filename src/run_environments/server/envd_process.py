"""A command of an E2B-style session: what happens to it, and the clients attached to it,
each through a bounded buffer (a client that does not read makes the command wait)."""

from __future__ import annotations

import contextlib
import math
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field

import anyio

from .._handles import ProcessHandle

FOLLOWER_BUFFER = 4 << 20
"""Output bytes buffered for one attached client before the command waits for it."""
EVENT_COST = 256
"""What an event counts against that bound at least (its own memory)."""


@dataclass
class Event:
    """What happened to a process: ``start``, ``stdout``/``stderr`` data, or ``end``."""

    kind: str
    data: bytes = b""
    exit_code: int = 0
    status: str = ""
    error: str | None = None


class Follower:
    """One client attached to a process: the events it has not read yet, bounded. Each event
    counts at least :data:`EVENT_COST` bytes, so many tiny ones are bounded too."""

    def __init__(self) -> None:
        self.send, self.receive = anyio.create_memory_object_stream[Event](math.inf)
        self.buffered = 0
        self.space = anyio.Event()
        self.closed = False

    async def push(self, event: Event) -> None:
        """Queue ``event``, waiting while the client is too far behind (never for the end,
        never once the client has gone)."""
        while not self.closed and self.buffered > FOLLOWER_BUFFER and event.kind != "end":
            await self.space.wait()  # the client reads slowly: the command waits for it
        if self.closed:
            return
        self.buffered += _cost(event)
        with contextlib.suppress(anyio.BrokenResourceError, anyio.ClosedResourceError):
            self.send.send_nowait(event)

    async def events(self) -> AsyncIterator[Event]:
        async for event in self.receive:
            self.buffered -= _cost(event)
            self.space.set()
            self.space = anyio.Event()
            yield event
            if event.kind == "end":
                return

    def close(self) -> None:
        self.closed = True
        self.send.close()
        self.receive.close()
        self.space.set()  # a push waiting for room goes on (and drops its event)


def _cost(event: Event) -> int:
    return max(len(event.data), EVENT_COST)


@dataclass
class Process:
    """A command running in a session, and the clients attached to it."""

    pid: int
    argv: list[str]
    envs: dict[str, str]
    cwd: str
    tag: str | None
    handle: ProcessHandle
    followers: set[Follower] = field(default_factory=set)

    async def publish(self, event: Event) -> None:
        for follower in list(self.followers):
            await follower.push(event)

    @contextlib.contextmanager
    def follow(self) -> Iterator[Follower]:
        """Attach a client: it sees the events from now on."""
        follower = Follower()
        self.followers.add(follower)
        try:
            yield follower
        finally:
            self.followers.discard(follower)
            follower.close()

    @property
    def done(self) -> bool:
        return self.handle.done
