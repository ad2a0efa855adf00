"""Standard input written while a program runs, and signals sent to it."""

from __future__ import annotations

import signal as _signal
from collections.abc import AsyncIterator, Callable

import anyio

from ._errors import InvalidOptionsError

MAX_PENDING = 1 << 20
"""Bytes written and not yet taken by the program after which :meth:`LiveInput.write`
waits."""


def signal_number(sig: int | str) -> int:
    """A signal's number from its number or name (``"SIGINT"``, ``"INT"``).

    :raises InvalidOptionsError: for anything that is not a signal.
    """
    try:
        if isinstance(sig, str):
            name = sig.upper()
            return int(_signal.Signals[name if name.startswith("SIG") else f"SIG{name}"])
        return int(_signal.Signals(sig))
    except (KeyError, ValueError):
        raise InvalidOptionsError(f"{sig!r} is not a signal") from None


class LiveInput:
    """The standard input of one run, written while the program runs (a terminal, a
    WebSocket), and the signals sent to it.

    Pass it as ``ExecutionOptions(stdin=LiveInput())``. What is written before the program
    starts waits for it; :meth:`close` is the end of file. Input goes to the program, not to
    a compile step. A signal reaches the program and everything it started, where the
    environment can deliver it (E2B's API delivers only SIGKILL and SIGTERM); one sent
    before the program starts is delivered when it does, one sent after it ended is
    dropped. One run uses it; the remote environment does not take it.

    :param max_pending: bytes written and not yet taken by the program past which
        :meth:`write` waits.
    """

    def __init__(self, max_pending: int = MAX_PENDING) -> None:
        if not isinstance(max_pending, int) or max_pending < 1:
            raise InvalidOptionsError("max_pending must be a positive integer")
        self._max_pending = max_pending
        self._pending = bytearray()
        self._closed = False
        self._room = anyio.Event()
        self._room.set()
        self._signals: list[int] = []
        self._ready: Callable[[], None] | None = None
        self._deliver: Callable[[int], None] | None = None
        self._used = False
        self._finished = False

    # -- the writer's side --------------------------------------------------------------
    async def write(self, data: str | bytes) -> None:
        """Add ``data`` to the program's input; waits while too much is pending.

        :raises InvalidOptionsError: after :meth:`close`.
        """
        chunk = data.encode() if isinstance(data, str) else bytes(data)
        while len(self._pending) >= self._max_pending and not self._finished:
            self._room = anyio.Event()
            await self._room.wait()
        if self._closed:
            raise InvalidOptionsError("the input was closed")
        if self._finished or not chunk:
            return  # the program is gone: what it would not read is dropped
        self._pending += chunk
        self._notify()

    def close(self) -> None:
        """End of file, once what was written is read."""
        self._closed = True
        self._notify()

    def signal(self, sig: int | str) -> None:
        """Send ``sig`` (a number or a name such as ``"SIGINT"``) to the program.

        :raises InvalidOptionsError: for something that is not a signal.
        """
        number = signal_number(sig)
        if self._finished:
            return
        if self._deliver is not None:
            self._deliver(number)
        else:
            self._signals.append(number)

    @property
    def finished(self) -> bool:
        """Whether the program that took it is over (what is written now is dropped)."""
        return self._finished

    @property
    def used(self) -> bool:
        """Whether a run took it already."""
        return self._used

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called."""
        return self._closed

    # -- the environment's side ---------------------------------------------------------
    def attach(self, ready: Callable[[], None], deliver: Callable[[int], None]) -> None:
        """Begin feeding a program: ``ready`` is called whenever there is input or end of
        file to take, ``deliver`` with each signal (those sent already, at once).

        :raises InvalidOptionsError: if a run used it already.
        """
        if self._used:
            raise InvalidOptionsError("a LiveInput serves one run")
        self._used = True
        self._ready, self._deliver = ready, deliver
        for number in self._signals:
            deliver(number)
        self._signals.clear()
        if self._pending or self._closed:
            ready()

    def detach(self) -> None:
        """The program is over: nothing more reaches it, and writers stop waiting."""
        self._ready = self._deliver = None
        self._finished = True
        self._pending.clear()
        self._room.set()

    def take(self, most: int) -> bytes | None:
        """Up to ``most`` bytes of pending input; ``b""`` when none is pending yet, None at
        the end of file."""
        if not self._pending:
            return None if self._closed else b""
        chunk = bytes(self._pending[:most])
        del self._pending[:most]
        if len(self._pending) < self._max_pending:
            self._room.set()
        return chunk

    async def chunks(self, most: int = 1 << 16) -> AsyncIterator[bytes]:
        """The input as it comes, to its end of file (for environments that send it on)."""
        arrived = anyio.Event()

        def ready() -> None:
            arrived.set()

        self._ready = ready
        while True:
            chunk = self.take(most)
            if chunk is None:
                return
            if chunk:
                yield chunk
                continue
            arrived = anyio.Event()
            await arrived.wait()

    def _notify(self) -> None:
        if self._ready is not None:
            self._ready()
