"""The supervision loop of a local child: one task woken by the event loop's readiness
callbacks on the child's pipes, its standard input and its pidfd."""

from __future__ import annotations

import asyncio
import collections
import os
import signal
from dataclasses import dataclass
from typing import IO, TYPE_CHECKING

from ._live import LiveInput
from ._output import OutputBuffer

if TYPE_CHECKING:
    from ._process import _Child

READ_CHUNK = 1 << 16
PIPE_GRACE = 0.2
"""How long pipes may stay open after the program's process group is gone."""


@dataclass(kw_only=True)
class Stream(OutputBuffer):
    """An output buffer fed by one of the child's pipes."""

    file: IO[bytes]
    closed: bool = False


class Supervision:
    """One task, woken by readiness callbacks on the event loop: pipes, stdin and the pidfd.

    The callbacks only read, write and signal; output reaches the caller's callbacks from
    the task itself, in order. Deadlines are timers, so a slow callback cannot delay a kill.
    """

    def __init__(
        self,
        child: _Child,
        streams: tuple[Stream, Stream],
        stdin: bytes | LiveInput | None,
        timeout: float,
        grace: float,
    ) -> None:
        self.loop = asyncio.get_running_loop()
        self.child = child
        self.streams = streams
        self.live = stdin if isinstance(stdin, LiveInput) else None
        self.stdin = (
            memoryview(b"" if isinstance(stdin, LiveInput) else stdin)
            if stdin is not None
            else None
        )
        self.writing = False
        self.timeout = timeout
        self.grace = grace
        self.pending: collections.deque[tuple[Stream, bytes]] = collections.deque()
        self.exited = False
        self.timed_out = False
        self.wakeup: asyncio.Future[None] | None = None
        self.timers: list[asyncio.Handle] = []
        self.readers: set[int] = set()
        self.writer: int | None = None

    async def run(self) -> bool:
        self._start()
        try:
            while True:
                while self.pending:
                    stream, chunk = self.pending.popleft()
                    await stream.emit(chunk, final=not chunk)
                if self.exited and all(stream.closed for stream in self.streams):
                    return self.timed_out
                self.wakeup = self.loop.create_future()
                await self.wakeup
        finally:
            self._stop()

    def _start(self) -> None:
        for stream in self.streams:
            fd = stream.file.fileno()
            os.set_blocking(fd, False)
            self.loop.add_reader(fd, self._readable, stream)
            self.readers.add(fd)
        if self.child.pidfd is not None:
            self.loop.add_reader(self.child.pidfd, self._exited)
            self.readers.add(self.child.pidfd)
        else:
            self._poll_exit()
        if self.stdin is not None:
            assert self.child.proc.stdin is not None
            self.writer = self.child.proc.stdin.fileno()
            os.set_blocking(self.writer, False)
            if self.live is not None:
                self.live.attach(self._input, self._signal)
            else:
                self._input()
        self.timers.append(self.loop.call_later(self.timeout, self._deadline))

    def _stop(self) -> None:
        if self.live is not None:
            self.live.detach()
        for fd in self.readers:
            self.loop.remove_reader(fd)
        self.readers.clear()
        self._close_stdin()
        for timer in self.timers:
            timer.cancel()

    def _wake(self) -> None:
        if self.wakeup is not None and not self.wakeup.done():
            self.wakeup.set_result(None)

    def _readable(self, stream: Stream) -> None:
        fd = stream.file.fileno()
        try:
            chunk = os.read(fd, READ_CHUNK)
        except BlockingIOError:
            return
        except OSError:
            chunk = b""
        if chunk:
            chunk = stream.keep(chunk)
            if stream.truncated:
                self.child.kill()  # past the output bound: the program stops
            if not chunk:
                return
        else:
            stream.closed = True
            self.loop.remove_reader(fd)
            self.readers.discard(fd)
        self.pending.append((stream, chunk))
        self._wake()

    def _exited(self) -> None:
        if self.child.pidfd is not None:
            self.loop.remove_reader(self.child.pidfd)
            self.readers.discard(self.child.pidfd)
        self.exited = True
        self.child.kill()  # what is left of the group once its leader is gone
        if not all(stream.closed for stream in self.streams):
            self.timers.append(self.loop.call_later(PIPE_GRACE, self._abandon_pipes))
        self._wake()

    def _poll_exit(self) -> None:
        if os.waitid(os.P_PID, self.child.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is None:
            self.timers.append(self.loop.call_later(0.005, self._poll_exit))
        else:
            self._exited()

    def _abandon_pipes(self) -> None:
        """Descendants that left the group still hold the pipes: stop waiting for them."""
        for stream in self.streams:
            if not stream.closed:
                stream.closed = True
                fd = stream.file.fileno()
                self.loop.remove_reader(fd)
                self.readers.discard(fd)
                self.pending.append((stream, b""))
        self._wake()

    def _input(self) -> None:
        """There is input to write (or, live, its end): wait for the pipe to take it."""
        if self.writer is not None and not self.writing:
            self.writing = True
            self.loop.add_writer(self.writer, self._writable)

    def _signal(self, number: int) -> None:
        if not self.exited:
            self.child.deliver(self.child.pid, number)

    def _writable(self) -> None:
        assert self.stdin is not None
        assert self.writer is not None
        if not self.stdin and self.live is not None:
            chunk = self.live.take(READ_CHUNK)
            if chunk is None:
                self._close_stdin()
            elif not chunk:  # nothing yet: wait until more is written
                self.writing = False
                self.loop.remove_writer(self.writer)
            else:
                self.stdin = memoryview(chunk)
            if not self.stdin:
                return
        try:
            written = os.write(self.writer, self.stdin[:READ_CHUNK])
        except BlockingIOError:
            return
        except OSError:  # the program closed its stdin; what it did not read is its business
            self._close_stdin()
            return
        self.stdin = self.stdin[written:]
        if not self.stdin and self.live is None:
            self._close_stdin()

    def _close_stdin(self) -> None:
        if self.writer is not None:
            self.loop.remove_writer(self.writer)
            self.writer = None
            self.writing = False
            assert self.child.proc.stdin is not None
            self.child.proc.stdin.close()

    def _deadline(self) -> None:
        self.timed_out = True
        self.child.deliver(self.child.pid, signal.SIGTERM)
        self.timers.append(self.loop.call_later(self.grace, self.child.kill))
