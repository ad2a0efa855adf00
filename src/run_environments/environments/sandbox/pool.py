"""Sandboxes started ahead: after a run, the next run of the same shape finds its sandbox
set up and waiting at bubblewrap's ``--block-fd``, and only moves its files in.

The pool holds at most :data:`MAX_PRESTARTED` sandboxes (one per shape; the oldest makes room),
starts them in background tasks and disposes of them there too; the environment says how to
launch and dispose of one.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import Any

from ..._models import Limits
from . import bwrap as bubblewrap
from .launch import Sandbox

MAX_PRESTARTED = 4
"""Sandboxes started ahead at once, one per shape; the oldest makes room for a new one."""


@dataclass(frozen=True)
class Shape:
    """What must match for a sandbox started ahead to serve a run."""

    argv: tuple[str, ...]
    env: tuple[tuple[str, str], ...]
    cwd: str
    limits: Limits


Launch = Callable[[Shape], Awaitable[Sandbox | None]]
Dispose = Callable[[Sandbox], Coroutine[Any, Any, Any]]


class Pool:
    """The sandboxes started ahead for one environment, and the tasks that start and stop
    them. ``launch`` starts one for a shape (None if it cannot); ``dispose`` stops one."""

    def __init__(self, launch: Launch, dispose: Dispose) -> None:
        self.launch = launch
        self.dispose = dispose
        self.held: dict[Shape, Sandbox] = {}
        self.warming: dict[Shape, asyncio.Task[Any]] = {}
        self.tasks: set[asyncio.Task[Any]] = set()

    async def claim(self, shape: Shape, timeout: float) -> Sandbox | None:
        """The sandbox held for ``shape``, waiting up to ``timeout`` for one being set up."""
        warming = self.warming.get(shape)
        if warming is not None and timeout > 0:  # nearly ready: better than a new one
            await asyncio.wait({warming}, timeout=timeout)
        sandbox = self.held.pop(shape, None)
        if sandbox is not None and sandbox.started is not None and sandbox.started.alive():
            return sandbox
        if sandbox is not None:
            self.spawn(self.dispose(sandbox))
        return None

    def prestart(self, shape: Shape) -> None:
        """Start a sandbox for the next run of this shape, in the background."""
        if shape.cwd not in (bubblewrap.WORKDIR, "/tmp"):
            return  # any other working directory must exist before set-up
        if shape in self.held or shape in self.warming:
            return
        while self.held and len(self.held) + len(self.warming) >= MAX_PRESTARTED:
            self.spawn(self.dispose(self.held.pop(next(iter(self.held)))))
        if len(self.warming) >= MAX_PRESTARTED:
            return
        task = self.spawn(self._warm(shape))
        self.warming[shape] = task
        task.add_done_callback(lambda _: self.warming.pop(shape, None))

    async def _warm(self, shape: Shape) -> None:
        sandbox = await self.launch(shape)
        if sandbox is None:
            return
        if shape in self.held:
            await self.dispose(sandbox)
        else:
            self.held[shape] = sandbox

    def spawn(self, work: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        task = asyncio.get_running_loop().create_task(work)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        return task

    async def settle(self) -> None:
        """Wait for the background work of this event loop (set-ups, disposals) to end."""
        loop = asyncio.get_running_loop()
        while tasks := {task for task in self.tasks if task.get_loop() is loop}:
            await asyncio.wait(tasks)

    async def close(self) -> None:
        """Stop setting up, let disposals finish, dispose of every sandbox held."""
        loop = asyncio.get_running_loop()
        for task in list(self.warming.values()):
            if task.get_loop() is loop:
                task.cancel()  # set-ups may stop half-way (they clean up after themselves)
        tasks = [task for task in self.tasks if task.get_loop() is loop]
        await asyncio.gather(*tasks, return_exceptions=True)  # disposals must finish
        while self.held:
            _, sandbox = self.held.popitem()
            await self.dispose(sandbox)

    def close_now(self) -> None:
        """Kill every sandbox held, with no event loop (at interpreter exit)."""
        for sandbox in list(self.held.values()):
            if sandbox.started is not None:
                sandbox.signal(sandbox.started.pid, signal.SIGKILL)
                with contextlib.suppress(ChildProcessError):
                    sandbox.started.child.reap()
                sandbox.started.child.close()
            sandbox.close_descriptors()
        self.held.clear()
