"""Admission control: a bounded number of executions at once, and a bounded queue."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import anyio

from .._errors import RunEnvironmentError


class Overloaded(RunEnvironmentError):
    """Every slot and every place in the queue is taken (the server answers 429)."""


class Admission:
    """At most ``limit`` executions run at once; at most ``queue`` more wait for a slot."""

    def __init__(self, limit: int, queue: int) -> None:
        self.limit = limit
        self.queue = queue
        self.running = 0
        self.waiting = 0
        self._slots = anyio.Semaphore(limit)

    @contextlib.asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        """Hold a slot for one execution.

        :raises Overloaded: if the queue is full.
        """
        try:
            self._slots.acquire_nowait()  # a free slot: taken at once, never counted waiting
        except anyio.WouldBlock:
            if self.waiting >= self.queue:
                raise Overloaded from None
            self.waiting += 1
            try:
                await self._slots.acquire()
            finally:
                self.waiting -= 1
        self.running += 1
        try:
            yield
        finally:
            self.running -= 1
            self._slots.release()
