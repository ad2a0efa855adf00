"""Process supervision, shared by every environment that runs a local child process.

A child starts in a session of its own. Its stdout and stderr are drained concurrently into
bounded buffers (a stream that passes its bound stops the program), the callbacks see text as
it arrives, and the exit is awaited through a pidfd so no helper thread is needed. On timeout
or cancellation the whole process group gets SIGTERM, a short grace, then SIGKILL; whatever
output arrived is kept. When the main process ends, what is left of its group is killed, and
pipes still held by escaped descendants are abandoned after a short wait.
"""

from __future__ import annotations

import contextlib
import os
import resource
import signal
import subprocess
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import anyio

from ._errors import SpawnError
from ._live import LiveInput
from ._models import OutputCallback
from ._supervision import Stream, Supervision


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
    oom_killed: bool = False

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


class _Child:
    """One spawned process and what it started."""

    def __init__(
        self, proc: subprocess.Popen[bytes], deliver: Callable[[int, int], None] = _killpg
    ) -> None:
        self.proc = proc
        self.pid = proc.pid
        self.deliver = deliver
        self.pidfd: int | None = None
        with contextlib.suppress(AttributeError, OSError):
            self.pidfd = os.pidfd_open(proc.pid)

    def kill(self) -> None:
        self.deliver(self.pid, signal.SIGKILL)

    async def exited(self) -> None:
        """Wait until the main process has exited (it stays unreaped, so its pid stays ours)."""
        if self.pidfd is not None:
            await anyio.wait_readable(self.pidfd)
            return
        delay = 0.001
        flags = os.WEXITED | os.WNOHANG | os.WNOWAIT  # a look, not a wait: it never blocks
        while os.waitid(os.P_PID, self.pid, flags) is None:  # noqa: ASYNC222
            await anyio.sleep(delay)
            delay = min(delay * 2, 0.05)

    async def terminate(self, grace: float) -> None:
        """SIGTERM to everything, ``grace`` seconds to exit, then SIGKILL to everything."""
        self.deliver(self.pid, signal.SIGTERM)
        with anyio.move_on_after(grace):
            await self.exited()
        self.kill()
        await self.exited()

    def reap(self) -> tuple[int, resource.struct_rusage]:
        if self.proc.returncode is not None:  # reaped already: nothing more to learn
            return self.proc.returncode, resource.struct_rusage((0.0, 0.0) + (0,) * 14)
        _, status, usage = os.wait4(self.pid, 0)
        self.proc.returncode = os.waitstatus_to_exitcode(status)
        return self.proc.returncode, usage

    def running(self) -> bool:
        """Whether the process has not exited (a look that reaps nothing)."""
        if self.proc.returncode is not None:
            return False
        try:
            flags = os.WEXITED | os.WNOHANG | os.WNOWAIT
            return os.waitid(os.P_PID, self.pid, flags) is None
        except ChildProcessError:
            return False

    def close(self) -> None:
        """Close the pidfd and the pipes (again: nothing)."""
        if self.pidfd is not None:
            os.close(self.pidfd)
            self.pidfd = None
        for pipe in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            if pipe is not None:
                pipe.close()


@dataclass(frozen=True, kw_only=True)
class Spawn:
    """How to start the child, beyond its argv.

    :param pass_fds: descriptors the child inherits.
    :param user: run as this uid (needs root); supplementary groups are dropped.
    :param group: run as this gid (needs root).
    :param prepare: awaited with the child's pid after it starts and before it is supervised,
        to set it up from outside (for example, to place a sandbox in a cgroup).
    :param signal: delivers a signal to everything the program started, given the child's
        pid; by default, to the child's process group.
    """

    pass_fds: tuple[int, ...] = ()
    user: int | None = None
    group: int | None = None
    prepare: Callable[[int], Awaitable[None]] | None = None
    signal: Callable[[int, int], None] = _killpg


def _spawn(
    argv: Sequence[str], cwd: str, env: Mapping[bytes, bytes], has_stdin: bool, spawn: Spawn
) -> subprocess.Popen[bytes]:
    extra: dict[str, Any] = {}
    if spawn.user is not None:
        extra.update(user=spawn.user, group=spawn.group, extra_groups=[])
    try:
        proc = subprocess.Popen(
            list(argv),
            stdin=subprocess.PIPE if has_stdin else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            cwd=cwd,
            env=env,
            start_new_session=True,
            pass_fds=spawn.pass_fds,
            **extra,
        )
    except OSError as exc:
        raise SpawnError(f"cannot start {argv[0]!r}: {exc.strerror or exc}") from exc
    if spawn.user is not None:
        # The pipes are the program's: owned by this process's user, /dev/stdin and
        # /dev/stdout (reopened through /proc/self/fd) would be closed to it.
        for pipe in (proc.stdin, proc.stdout, proc.stderr):
            if pipe is not None:
                os.fchown(pipe.fileno(), spawn.user, spawn.group if spawn.group is not None else -1)
    return proc


class Started:
    """A spawned (and prepared) process whose supervision has not begun.

    ``at`` is when its run began; whoever releases a held process resets it.
    """

    def __init__(self, child: _Child, at: float) -> None:
        self.child = child
        self.at = at

    @property
    def pid(self) -> int:
        return self.child.pid

    def alive(self) -> bool:
        return self.child.running()

    async def abandon(self, grace: float = 0.0) -> None:
        """Stop it (and all it started) without supervising it, reap it and close its
        pipes; after supervision (or a first call) there is nothing left to do."""
        try:
            if self.child.proc.returncode is None:
                with anyio.CancelScope(shield=True):
                    await self.child.terminate(grace)
                self.child.reap()
        finally:
            self.child.close()


async def start_process(
    argv: Sequence[str],
    *,
    cwd: str,
    env: Mapping[bytes, bytes],
    stdin: bool,
    spawn: Spawn = Spawn(),
    timeout: float,
) -> Started:
    """Spawn ``argv`` and run ``spawn.prepare`` on it (within ``timeout``).

    :param stdin: whether the process gets a pipe for standard input (else /dev/null).
    :raises SpawnError: if the program cannot be started.
    :raises TimeoutError: if preparing it took longer than ``timeout``.
    """
    at = time.perf_counter()
    child = _Child(_spawn(argv, cwd, env, stdin, spawn), spawn.signal)
    started = Started(child, at)
    if spawn.prepare is not None:
        try:
            with anyio.fail_after(timeout):
                await spawn.prepare(child.pid)
        except BaseException:
            await started.abandon()
            raise
    return started


async def supervise(
    started: Started,
    *,
    timeout: float,
    stdin: bytes | LiveInput | None = None,
    max_output_bytes: int,
    on_stdout: OutputCallback | None = None,
    on_stderr: OutputCallback | None = None,
    kill_grace: float = 0.5,
    groups: ProcessGroups | None = None,
    release: Callable[[], None] | None = None,
) -> Outcome:
    """Supervise a started process to its end and return what happened.

    :param release: called first, to let a process that was held go on.
    """
    child = started.child
    proc = child.proc
    assert proc.stdout is not None
    assert proc.stderr is not None
    if stdin is None and proc.stdin is not None:
        proc.stdin.close()  # a pipe made in advance: the program reads end-of-file
    streams = (
        Stream(file=proc.stdout, limit=max_output_bytes, callback=on_stdout),
        Stream(file=proc.stderr, limit=max_output_bytes, callback=on_stderr),
    )
    timed_out = False
    try:
        with groups.track(child.pid) if groups is not None else contextlib.nullcontext():
            if release is not None:
                release()
            timed_out = await Supervision(child, streams, stdin, timeout, kill_grace).run()
    except BaseException:
        with anyio.CancelScope(shield=True):
            await child.terminate(kill_grace)
        raise
    finally:
        try:
            code, usage = child.reap()
        finally:
            child.close()
    duration = time.perf_counter() - started.at
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


async def run_process(
    argv: Sequence[str],
    *,
    cwd: str,
    env: Mapping[bytes, bytes],
    timeout: float,
    stdin: bytes | LiveInput | None = None,
    max_output_bytes: int,
    on_stdout: OutputCallback | None = None,
    on_stderr: OutputCallback | None = None,
    kill_grace: float = 0.5,
    groups: ProcessGroups | None = None,
    spawn: Spawn = Spawn(),
) -> Outcome:
    """Run ``argv`` to completion under supervision and return what happened.

    :raises SpawnError: if the program cannot be started.
    """
    started = await start_process(
        argv, cwd=cwd, env=env, stdin=stdin is not None, spawn=spawn, timeout=timeout
    )
    remaining = max(timeout - (time.perf_counter() - started.at), 0.001)
    return await supervise(
        started,
        timeout=remaining,
        stdin=stdin,
        max_output_bytes=max_output_bytes,
        on_stdout=on_stdout,
        on_stderr=on_stderr,
        kill_grace=kill_grace,
        groups=groups,
    )
