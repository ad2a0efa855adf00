"""Process supervision, shared by every environment that runs a local child process.

A child starts in a session of its own. Its stdout and stderr are drained concurrently into
bounded buffers (a stream that passes its bound stops the program), the callbacks see text as
it arrives, and the exit is awaited through a pidfd so no helper thread is needed. On timeout
or cancellation the whole process group gets SIGTERM, a short grace, then SIGKILL; whatever
output arrived is kept. When the main process ends, what is left of its group is killed, and
pipes still held by escaped descendants are abandoned after a short wait.
"""

from __future__ import annotations

import codecs
import contextlib
import inspect
import os
import signal
import subprocess
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import IO

import anyio

from ._errors import SpawnError
from ._models import OutputCallback

READ_CHUNK = 1 << 16
PIPE_GRACE = 0.2
"""How long pipes may stay open after the program's process group is gone."""


@dataclass(frozen=True, kw_only=True)
class Outcome:
    """What one process did: the raw material of a result."""

    exit_code: int | None
    signal: str | None
    timed_out: bool
    stdout: bytes
    stderr: bytes
    stdout_truncated: bool
    stderr_truncated: bool
    duration: float
    cpu_time: float | None = None
    memory_peak: int | None = None

    @property
    def output_exceeded(self) -> bool:
        """Whether the program was stopped for writing more than its output bound."""
        return self.stdout_truncated or self.stderr_truncated


class ProcessGroups:
    """The process groups an environment has running, so that they can all be killed."""

    def __init__(self) -> None:
        self._groups: set[int] = set()

    @contextlib.contextmanager
    def track(self, pgid: int) -> Iterator[None]:
        self._groups.add(pgid)
        try:
            yield
        finally:
            self._groups.discard(pgid)

    def kill_all(self) -> None:
        for pgid in list(self._groups):
            _killpg(pgid, signal.SIGKILL)

    def __len__(self) -> int:
        return len(self._groups)


def _killpg(pgid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def kill_marked(variable: str, value: str) -> int:
    """SIGKILL every process of ours whose environment has ``variable`` set to ``value``
    or to ``value`` followed by a dot and more.

    This finds descendants that left the process group (double-forked daemons), the way
    CI servers find the leftovers of a build. Returns how many were signalled.
    """
    marker = f"{variable}={value}".encode()
    me = os.getpid()
    killed = 0
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit() or int(entry.name) == me:
            continue
        try:
            with open(f"/proc/{entry.name}/environ", "rb") as fh:
                environ = fh.read()
        except OSError:
            continue
        if any(v == marker or v.startswith(marker + b".") for v in environ.split(b"\0")):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(int(entry.name), signal.SIGKILL)
                killed += 1
    return killed


@dataclass(kw_only=True)
class _Stream:
    file: IO[bytes]
    limit: int
    callback: OutputCallback | None
    data: bytearray = field(default_factory=bytearray)
    truncated: bool = False
    decoder: codecs.IncrementalDecoder = field(
        default_factory=lambda: codecs.getincrementaldecoder("utf-8")("replace")
    )

    async def drain(self, child: _Child) -> None:
        fd = self.file.fileno()
        os.set_blocking(fd, False)
        while True:
            await anyio.wait_readable(fd)
            try:
                chunk = os.read(fd, READ_CHUNK)
            except BlockingIOError:
                continue
            if not chunk:
                await self._emit(self.decoder.decode(b"", final=True))
                return
            await self._take(chunk, child)

    async def _take(self, chunk: bytes, child: _Child) -> None:
        room = self.limit - len(self.data)
        if len(chunk) > room:
            chunk = chunk[:room]
            self.truncated = True
            child.kill()
        if chunk:
            self.data += chunk
            await self._emit(self.decoder.decode(chunk))

    async def _emit(self, text: str) -> None:
        if self.callback is not None and text:
            returned = self.callback(text)
            if inspect.isawaitable(returned):
                await returned


class _Child:
    """One spawned process and its group."""

    def __init__(self, proc: subprocess.Popen[bytes]) -> None:
        self.proc = proc
        self.pid = proc.pid
        self.pidfd: int | None = None
        with contextlib.suppress(AttributeError, OSError):
            self.pidfd = os.pidfd_open(proc.pid)

    def kill(self) -> None:
        _killpg(self.pid, signal.SIGKILL)

    async def exited(self) -> None:
        """Wait until the main process has exited (it stays unreaped, so its pid stays ours)."""
        if self.pidfd is not None:
            await anyio.wait_readable(self.pidfd)
            return
        delay = 0.001
        while os.waitid(os.P_PID, self.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is None:
            await anyio.sleep(delay)
            delay = min(delay * 2, 0.05)

    async def terminate(self, grace: float) -> None:
        """SIGTERM to the group, ``grace`` seconds to exit, then SIGKILL to the group."""
        _killpg(self.pid, signal.SIGTERM)
        with anyio.move_on_after(grace):
            await self.exited()
        self.kill()
        await self.exited()

    def reap(self) -> tuple[int, os.struct_rusage]:
        _, status, usage = os.wait4(self.pid, 0)
        self.proc.returncode = os.waitstatus_to_exitcode(status)
        return self.proc.returncode, usage

    def close(self) -> None:
        if self.pidfd is not None:
            os.close(self.pidfd)
        for pipe in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            if pipe is not None:
                pipe.close()


async def _feed(pipe: IO[bytes], data: bytes) -> None:
    fd = pipe.fileno()
    os.set_blocking(fd, False)
    view = memoryview(data)
    try:
        while view:
            await anyio.wait_writable(fd)
            try:
                view = view[os.write(fd, view[:READ_CHUNK]) :]
            except BlockingIOError:
                continue
    except (BrokenPipeError, ConnectionResetError):
        pass  # the program stopped reading; what it did not read is its business
    finally:
        pipe.close()


def _spawn(
    argv: Sequence[str], cwd: str, env: Mapping[str, str], has_stdin: bool
) -> subprocess.Popen[bytes]:
    try:
        return subprocess.Popen(
            list(argv),
            stdin=subprocess.PIPE if has_stdin else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            cwd=cwd,
            env=dict(env),
            start_new_session=True,
        )
    except OSError as exc:
        raise SpawnError(f"cannot start {argv[0]!r}: {exc.strerror or exc}") from exc


async def run_process(
    argv: Sequence[str],
    *,
    cwd: str,
    env: Mapping[str, str],
    timeout: float,
    stdin: bytes | None = None,
    max_output_bytes: int,
    on_stdout: OutputCallback | None = None,
    on_stderr: OutputCallback | None = None,
    kill_grace: float = 0.5,
    groups: ProcessGroups | None = None,
) -> Outcome:
    """Run ``argv`` to completion under supervision and return what happened.

    :raises SpawnError: if the program cannot be started.
    """
    started = time.perf_counter()
    proc = _spawn(argv, cwd, env, stdin is not None)
    child = _Child(proc)
    assert proc.stdout is not None and proc.stderr is not None
    streams = (
        _Stream(file=proc.stdout, limit=max_output_bytes, callback=on_stdout),
        _Stream(file=proc.stderr, limit=max_output_bytes, callback=on_stderr),
    )
    timed_out = False
    try:
        with groups.track(child.pid) if groups is not None else contextlib.nullcontext():
            timed_out = await _supervise(child, streams, stdin, timeout, kill_grace)
    except BaseException:
        with anyio.CancelScope(shield=True):
            await child.terminate(kill_grace)
        raise
    finally:
        code, usage = child.reap()
        child.close()
    duration = time.perf_counter() - started
    return Outcome(
        exit_code=code if code >= 0 else None,
        signal=signal.Signals(-code).name if code < 0 else None,
        timed_out=timed_out,
        stdout=bytes(streams[0].data),
        stderr=bytes(streams[1].data),
        stdout_truncated=streams[0].truncated,
        stderr_truncated=streams[1].truncated,
        duration=duration,
        cpu_time=usage.ru_utime + usage.ru_stime,
        memory_peak=usage.ru_maxrss * 1024,
    )


async def _supervise(
    child: _Child,
    streams: tuple[_Stream, _Stream],
    stdin: bytes | None,
    timeout: float,
    grace: float,
) -> bool:
    drained = anyio.Event()

    async def pump() -> None:
        async with anyio.create_task_group() as inner:
            for stream in streams:
                inner.start_soon(stream.drain, child)
            if stdin is not None:
                assert child.proc.stdin is not None
                inner.start_soon(_feed, child.proc.stdin, stdin)
        drained.set()

    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(pump)
            timed_out = await _watch(child, timeout, grace, drained)
            tg.cancel_scope.cancel()
    except BaseExceptionGroup as group:
        raise _sole(group) from None
    return timed_out


def _sole(group: BaseExceptionGroup[BaseException]) -> BaseException:
    """The one exception inside nested task-group wrappers, or the group itself."""
    leaves = list(_leaves(group))
    return leaves[0] if len(leaves) == 1 else group


def _leaves(error: BaseException) -> Iterator[BaseException]:
    if isinstance(error, BaseExceptionGroup):
        for inner in error.exceptions:
            yield from _leaves(inner)
    else:
        yield error


async def _watch(child: _Child, timeout: float, grace: float, drained: anyio.Event) -> bool:
    """Wait for the program's end (or stop it at the deadline); True if it timed out."""
    timed_out = False
    with anyio.move_on_after(timeout) as deadline:
        await child.exited()
    if deadline.cancelled_caught:
        timed_out = True
        await child.terminate(grace)
    child.kill()  # what is left of the group once its leader is gone
    with anyio.move_on_after(PIPE_GRACE):
        await drained.wait()
    return timed_out
