"""Supervision of processes that are not local children (an E2B command; next, a Docker exec,
an SSH channel, a serverless invocation): the environment supplies how to start, feed, kill
and wait for one; the deadline, the output bound, the callbacks and the outcome are here.

At the deadline the process gets SIGTERM (``terminate``), ``kill_grace`` seconds to end, then
SIGKILL (``kill``); an API that offers no SIGTERM (E2B's SDK) supplies no ``terminate`` and is
killed at once. Past the output bound it is killed at once. After a kill the supervisor waits
``kill_wait`` seconds for its end and its last output.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import anyio

from ._errors import InvalidOptionsError
from ._live import LiveInput
from ._output import OutputBuffer
from ._process import Outcome
from .environments.command import Command

Sink = Callable[[str, bytes], Awaitable[None]]
"""Takes ``("stdout" | "stderr", data)`` as the process writes it."""


@dataclass(frozen=True, kw_only=True)
class RemoteCalls:
    """How to drive one remote process.

    :param start: starts it, sending its output to the sink it is given.
    :param wait: waits for its end: ``(exit code, signal name)``, one of them None.
    :param kill: stops it and everything it started (again: nothing).
    :param feed: sends standard input and closes it (None: the process gets none).
    :param send: sends some standard input and keeps it open, for input written while the
        program runs (:class:`LiveInput`; its end of file is ``feed(b"")``); None where the
        API cannot.
    :param terminate: asks it to stop (SIGTERM); None where the API cannot.
    :param signal: sends it (and what it started) a signal by number; None where the API
        cannot: then a live input's SIGKILL is ``kill``, its SIGTERM ``terminate`` (or
        ``kill``), and other signals are dropped.
    :param close: releases what ``start`` opened (its output stream, a channel), once the
        process is over or abandoned; it must not raise.
    """

    start: Callable[[Sink], Awaitable[None]]
    wait: Callable[[], Awaitable[tuple[int | None, str | None]]]
    kill: Callable[[], Awaitable[None]]
    feed: Callable[[bytes], Awaitable[None]] | None = None
    send: Callable[[bytes], Awaitable[None]] | None = None
    terminate: Callable[[], Awaitable[None]] | None = None
    signal: Callable[[int], Awaitable[None]] | None = None
    close: Callable[[], Awaitable[None]] | None = None


async def supervise_remote(
    calls: RemoteCalls, command: Command, *, kill_wait: float, kill_grace: float = 0.5
) -> Outcome:
    """Run ``command`` through ``calls`` to its end or its deadline, and say what happened.

    Exceptions of ``wait`` (and of the caller's callbacks) propagate after the process is
    killed."""
    out = OutputBuffer(limit=command.max_output_bytes, callback=command.on_stdout)
    err = OutputBuffer(limit=command.max_output_bytes, callback=command.on_stderr)
    buffers = {"stdout": out, "stderr": err}
    stopping = anyio.Event()

    async def sink(name: str, data: bytes) -> None:
        buffer = buffers[name]
        kept = buffer.keep(data)
        if buffer.truncated and not stopping.is_set():
            stopping.set()  # past the output bound: the program stops
        await buffer.emit(kept)

    live = command.stdin if isinstance(command.stdin, LiveInput) else None
    if live is not None and (calls.send is None or calls.feed is None):
        raise InvalidOptionsError("this environment does not take input written while it runs")
    started = time.perf_counter()
    ended: tuple[int | None, str | None] | None = None
    timed_out = False
    try:
        await calls.start(sink)
        async with anyio.create_task_group() as tg:

            async def stop_when_told() -> None:
                await stopping.wait()
                await calls.kill()

            async def feed(feeder: Callable[[bytes], Awaitable[None]], data: bytes) -> None:
                await feeder(data)

            async def stream(live: LiveInput) -> None:
                assert calls.send is not None
                assert calls.feed is not None
                async for chunk in live.chunks():
                    await calls.send(chunk)
                await calls.feed(b"")

            def deliver(number: int) -> None:
                tg.start_soon(_signal, calls, number)

            tg.start_soon(stop_when_told)
            if live is not None:
                live.attach(lambda: None, deliver)
                tg.start_soon(stream, live)
            elif calls.feed is not None and isinstance(command.stdin, bytes):
                tg.start_soon(feed, calls.feed, command.stdin)
            with anyio.move_on_after(command.remaining()):
                ended = await calls.wait()
            if ended is None:
                timed_out = True
                if calls.terminate is not None:
                    await calls.terminate()
                    with anyio.move_on_after(kill_grace):
                        ended = await calls.wait()
                if ended is None:
                    await calls.kill()
                    with anyio.move_on_after(kill_wait):  # for the output the kill lets through
                        ended = await calls.wait()
            tg.cancel_scope.cancel()
    except BaseException as exc:
        if live is not None:
            live.detach()
        with anyio.CancelScope(shield=True):
            await calls.kill()
            if calls.close is not None:
                await calls.close()
        if isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
            raise exc.exceptions[0] from None  # one failure: the caller's, as it was raised
        raise
    if live is not None:
        live.detach()
    if calls.close is not None:
        with anyio.CancelScope(shield=True):
            await calls.close()
    await out.emit(b"", final=True)
    await err.emit(b"", final=True)
    code, signal_name = ended if ended is not None else (None, "SIGKILL")  # never answered
    return Outcome(
        exit_code=code,
        signal=signal_name,
        timed_out=timed_out,
        stdout=bytes(out.data),
        stderr=bytes(err.data),
        stdout_truncated=out.truncated,
        stderr_truncated=err.truncated,
        duration=time.perf_counter() - started,
    )


async def _signal(calls: RemoteCalls, number: int) -> None:
    """A live input's signal, as the API can deliver it."""
    if calls.signal is not None:
        await calls.signal(number)
    elif number == signal.SIGTERM and calls.terminate is not None:
        await calls.terminate()
    elif number in (signal.SIGKILL, signal.SIGTERM):
        await calls.kill()
