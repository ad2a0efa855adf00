"""Long-lived processes that a front end drives (the E2B API's commands): a public handle to
write and close standard input, signal, read output as it comes and wait for the end, so
that front ends never touch an environment's processes, pipes or descriptors."""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Awaitable, Callable
from typing import IO

import anyio

from ._errors import InvalidOptionsError
from ._process import Started
from ._supervision import READ_CHUNK

Output = Callable[[str, bytes], Awaitable[None]]
"""Receives ``("stdout" | "stderr", data)``; the process waits while it does (backpressure)."""


class ProcessHandle:
    """One started process, driven from outside; ``close`` stops it and frees what the
    environment holds for it (its sandbox, its cgroup)."""

    def __init__(self, started: Started, close: Callable[[], Awaitable[None]]) -> None:
        self._started = started
        self._close = close
        self._writing = anyio.Lock()
        self.done = False

    async def write(self, data: bytes) -> None:
        """Feed standard input without blocking the event loop (the program may fill its
        output meanwhile: that is drained by :meth:`run`).

        :raises InvalidOptionsError: if standard input is closed.
        """
        async with self._writing:
            fd = self._stdin().fileno()
            os.set_blocking(fd, False)
            view = memoryview(data)
            while view:
                await anyio.wait_writable(fd)
                try:
                    view = view[os.write(fd, view[:READ_CHUNK]) :]
                except BlockingIOError:
                    continue

    def close_stdin(self) -> None:
        """Let the program read end-of-file (again: nothing)."""
        with contextlib.suppress(OSError, InvalidOptionsError):
            self._stdin().close()

    def _stdin(self) -> IO[bytes]:
        stdin = self._started.child.proc.stdin
        if stdin is None or stdin.closed:
            raise InvalidOptionsError("the process has no open standard input")
        return stdin

    def signal(self, sig: int) -> None:
        """Deliver ``sig`` to everything the process started (nothing once it is done)."""
        if not self.done:
            self._started.child.deliver(self._started.pid, sig)

    async def run(self, output: Output, timeout: float) -> int:
        """Drain the output to ``output`` until the process ends, killing it at ``timeout``
        seconds; then stop and free everything. Returns its exit status (-N when a signal
        ended it, as ``subprocess`` reports)."""
        child = self._started.child
        try:
            with anyio.move_on_after(timeout) as limit:
                async with anyio.create_task_group() as tg:
                    for name in ("stdout", "stderr"):
                        tg.start_soon(_drain, name, getattr(child.proc, name).fileno(), output)
                    await child.exited()
            if limit.cancelled_caught:  # its time is up: killed, as on a timeout
                child.deliver(self._started.pid, signal.SIGKILL)
        finally:
            with anyio.CancelScope(shield=True):
                if child.proc.returncode is None and not child.running():
                    child.reap()
                await self.close()
        return child.proc.returncode if child.proc.returncode is not None else -signal.SIGKILL

    async def close(self) -> None:
        """Kill what is left, reap, close pipes, free the sandbox (again: nothing)."""
        if not self.done:
            self.done = True
            await self._close()


async def _drain(name: str, fd: int, output: Output) -> None:
    os.set_blocking(fd, False)
    while True:
        await anyio.wait_readable(fd)
        try:
            chunk = os.read(fd, READ_CHUNK)
        except BlockingIOError:
            continue
        if not chunk:
            return
        await output(name, chunk)
