"""Warm Python runs: fork servers (``zygote.py``) inside bubblewrap, each serving one run at
a time in fresh namespaces, a cgroup of its own and the sandbox's seccomp filter.

A run of ``python3 script args`` in the workspace (no compile stage, no areas beyond the
workspace, no variable that changes how the interpreter starts) is handed to an idle server;
the run's pipes are passed over the server's control socket and supervised here as any other
program's. Each server holds one identity of the environment for its life and a directory
of its own on the host (bound at ``/.runs``), where each run's files are moved in before and
out after, into a directory made for that run alone. Every other run, and every run that
finds no idle server soon enough, goes the cold way (a sandbox of its own).

The pool starts servers as runs arrive, up to its size, in the background; one idle for
``idle`` seconds is stopped.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
import resource
import signal
import socket
import struct
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import anyio

from ..._errors import EnvironmentUnavailableError
from ..._process import Outcome, ProcessGroups, Started, _Child, supervise
from ..._workspace import off_loop, remove_tree, soon
from ..command import Command
from . import bwrap as bubblewrap
from . import cgroups as _cgroups
from . import seccomp
from .instance import InstanceDirectory
from .launch import _members, _signal_all, move_entries
from .outcomes import disk, translate
from .workspaces import Execution, Executions

SOURCE = Path(__file__).with_name("zygote.py").read_text()
WAIT = 0.05
"""Seconds a run waits for a busy pool's next free server before it goes the cold way."""
STARTUP = 30.0
"""Seconds a server may take to start."""
STARTUP_VARIABLES = ("PYTHON", "LC_", "LANG")
"""Prefixes of variables that change how the interpreter starts: such runs go the cold way."""
_CREDENTIALS = struct.calcsize("3i")


def default_size() -> int:
    """Servers at most: two per core (a run waiting on I/O leaves its core to another)."""
    return max(2, 2 * (os.cpu_count() or 1))


class _NotStarted(Exception):
    """The server failed before the program started (the run may go the cold way)."""


class _Pipes:
    """What supervision reads of a ``Popen``: the run's pipes (our ends) and its status."""

    def __init__(self, pid: int, stdin: int, stdout: int, stderr: int) -> None:
        self.pid = pid
        self.stdin: Any = open(stdin, "wb", buffering=0)
        self.stdout: Any = open(stdout, "rb", buffering=0)
        self.stderr: Any = open(stderr, "rb", buffering=0)
        self.returncode: int | None = None


class _Run(_Child):
    """A warm run as supervision sees it: the init of its PID namespace, whose end the
    server's runner reports on the control socket (which stands in for a pidfd)."""

    def __init__(self, server: Server, pid: int, pidfd: int, pipes: _Pipes,
                 cgroup: _cgroups.RunCgroup | None) -> None:  # fmt: skip
        self.proc = pipes  # type: ignore[assignment]
        self.pid = pid
        self.server = server
        self.init_fd = pidfd
        self.cgroup = cgroup
        self.pidfd = server.channel.fileno()
        self.deliver = self._deliver

    def _deliver(self, _pid: int, sig: int) -> None:
        if sig == signal.SIGKILL:
            if self.cgroup is not None:
                self.cgroup.kill()
            with contextlib.suppress(ProcessLookupError, OSError):
                signal.pidfd_send_signal(self.init_fd, signal.SIGKILL)
        elif self.cgroup is not None:  # the init ignores it; its program may not
            _signal_all(_members(self.cgroup), sig)

    async def exited(self) -> None:
        await anyio.wait_readable(self.server.channel)

    def reap(self) -> tuple[int, resource.struct_rusage]:
        if self.proc.returncode is None:
            message = self.server.take()
            status = message.get("status") if message else None
            self.proc.returncode = status if isinstance(status, int) else -signal.SIGKILL
            if message is None or "status" not in message:
                self.server.broken = True
        return self.proc.returncode, resource.struct_rusage((0.0, 0.0) + (0,) * 14)

    def running(self) -> bool:
        return self.proc.returncode is None

    def close(self) -> None:
        if self.init_fd >= 0:
            os.close(self.init_fd)
            self.init_fd = -1
        for pipe in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            if pipe is not None:
                pipe.close()


class Server:
    """One fork server: its bubblewrap, control socket, identity and host directory."""

    def __init__(self, user: tuple[int, int] | None, slot: str) -> None:
        self.user = user
        self.slot = slot
        self.channel, self._theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self.channel.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
        self.channel.setblocking(False)
        self.process: subprocess.Popen[bytes] | None = None
        self.broken = False
        self.keeps_user = True
        self.pids: dict[str, int] = {}
        """The pids of the run set up ahead (``init``, ``program``), as they say them."""
        self.idle_since = time.monotonic()

    # -- messages ------------------------------------------------------------------------
    def take(self) -> dict[str, Any] | None:
        """The next message if one is there (its sender's pid as ``pid``); None at the end
        of the server's side or if none is waiting."""
        try:
            data, ancillary, _, _ = self.channel.recvmsg(1 << 16, socket.CMSG_SPACE(_CREDENTIALS))
        except (BlockingIOError, InterruptedError):
            return None
        except OSError:
            self.broken = True
            return None
        if not data:
            self.broken = True
            return None
        message: dict[str, Any] = json.loads(data)
        for level, kind, payload in ancillary:
            if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS:
                message["pid"] = struct.unpack("3i", payload[:_CREDENTIALS])[0]
        return message

    async def receive(self, timeout: float) -> dict[str, Any]:
        """The next message within ``timeout``.

        :raises EnvironmentUnavailableError: if the server is gone or says what failed.
        """
        with anyio.move_on_after(max(timeout, 0.001)):
            while True:
                message = self.take()
                if message is not None:
                    if "error" in message:
                        self.broken = True
                        raise EnvironmentUnavailableError(f"warm run failed: {message['error']}")
                    return message
                if self.broken:
                    raise EnvironmentUnavailableError("the warm server ended")
                await anyio.wait_readable(self.channel)
        self.broken = True
        raise EnvironmentUnavailableError(f"the warm server did not answer within {timeout:g} s")

    def send(self, message: dict[str, Any], fds: Sequence[int] = ()) -> None:
        data = json.dumps(message).encode()
        ancillary = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, struct.pack(f"{len(fds)}i", *fds))]
        try:
            self.channel.sendmsg([data], ancillary if fds else [])
        except OSError as exc:
            self.broken = True
            raise EnvironmentUnavailableError(f"the warm server is gone: {exc}") from None

    # -- life ------------------------------------------------------------------------------
    def spawn(self, static: list[str], python: str, env: dict[str, str], sizes: int) -> None:
        """Start bubblewrap with the server in it (blocking: for a worker thread)."""
        passwd = bubblewrap.data_fd(bubblewrap.PASSWD.encode())
        group = bubblewrap.data_fd(bubblewrap.GROUP.encode())
        control = self._theirs.fileno()
        argv = [*_keep_capabilities(static), "--size", str(sizes), "--tmpfs", "/tmp",
                "--size", str(sizes), "--tmpfs", "/dev/shm", "--dir", bubblewrap.WORKDIR,
                "--bind", self.slot, "/.runs", "--chdir", "/",
                "--ro-bind-data", str(passwd), "/etc/passwd",
                "--ro-bind-data", str(group), "/etc/group"]  # fmt: skip
        for name, value in env.items():
            argv += ["--setenv", name, value]
        argv += ["--remount-ro", "/", "--", python, "-c", SOURCE, str(control)]
        extra: dict[str, Any] = {}
        if self.user is not None:
            extra.update(user=self.user[0], group=self.user[1], extra_groups=[])
        try:
            self.process = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL, cwd="/", env={}, start_new_session=True,
                pass_fds=(passwd, group, control), **extra,
            )  # fmt: skip
        finally:
            os.close(passwd)
            os.close(group)
            self._theirs.close()

    def stop(self) -> None:
        """Kill the server and everything it runs, and reap it (blocking, but brief)."""
        self.broken = True
        if self.process is not None and self.process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
        self.channel.close()
        with contextlib.suppress(OSError):
            self._theirs.close()


def _keep_capabilities(static: list[str]) -> list[str]:
    """bubblewrap's common arguments, with the capabilities a server needs in its user
    namespace (to make each run's namespaces and mounts) instead of none."""
    argv = list(static)
    drop = argv.index("--cap-drop")
    del argv[drop : drop + 2]
    for cap in ("CAP_SYS_ADMIN", "CAP_NET_ADMIN", "CAP_SETPCAP"):
        argv[drop:drop] = ["--cap-add", cap]
    return argv


class Warm:
    """The fork servers of one environment."""

    def __init__(
        self,
        *,
        home: InstanceDirectory,
        executions: Executions,
        keeper: _cgroups.Keeper,
        network: bool,
        python: str,
        env: dict[str, str],
        size: int,
        groups: ProcessGroups,
        kill_grace: float,
        idle: float,
    ) -> None:
        self.home = home
        self.idle_seconds = idle
        self.executions = executions
        self.keeper = keeper
        self.network = network
        self.python = python
        self.env = env
        self.size = size
        self.groups = groups
        self.kill_grace = kill_grace
        self.static: list[str] | None = None
        self.idle: list[Server] = []
        self.servers: set[Server] = set()
        self.starting = 0
        self.busy = 0
        self.waiters: list[asyncio.Future[Server]] = []
        self.tasks: set[asyncio.Task[Any]] = set()
        self.runs = 0
        """Runs served warm (for monitoring and for tests)."""

    def fits(self, command: Command, cwd: str) -> bool:
        """Whether ``command`` can run warm: ``python3 script args`` in the workspace or in
        /tmp, with the interpreter started the way the servers were."""
        argv = command.argv
        if self.size <= 0 or len(argv) < 2 or argv[0] != self.python:
            return False
        if argv[1].startswith("-") or cwd not in (bubblewrap.WORKDIR, "/tmp"):
            return False
        return all(
            self.env.get(name) == value
            for name, value in command.env.items()
            if name.startswith(STARTUP_VARIABLES)
        )

    # -- the pool -------------------------------------------------------------------------
    async def claim(self, timeout: float) -> Server | None:
        """An idle server, or one freed within ``timeout``; None sends the run the cold way
        (and has a server started for the runs to come, if the pool may grow)."""
        while self.idle:
            server = self.idle.pop()
            if not server.broken:
                return server
            self._spawn(self._retire(server))
        if len(self.servers) + self.starting < self.size:
            self.starting += 1
            self._spawn(self._start())
        if not self.servers or timeout <= 0:
            return None
        waiter: asyncio.Future[Server] = asyncio.get_running_loop().create_future()
        self.waiters.append(waiter)
        try:
            with anyio.move_on_after(min(timeout, WAIT)):
                await asyncio.wait({waiter})
        except BaseException:
            if waiter.done() and not waiter.cancelled():
                self.give_back(waiter.result())  # handed over as this run was cancelled
            raise
        finally:
            if waiter in self.waiters:
                self.waiters.remove(waiter)
        if waiter.done():
            return waiter.result()
        waiter.cancel()
        return None

    def give_back(self, server: Server) -> None:
        if server.broken:
            self._spawn(self._retire(server))
            return
        server.idle_since = time.monotonic()
        while self.waiters:
            waiter = self.waiters.pop(0)
            if not waiter.done():
                waiter.set_result(server)
                return
        self.idle.append(server)
        asyncio.get_running_loop().call_later(self.idle_seconds + 0.05, self._trim)

    def _trim(self) -> None:
        now = time.monotonic()
        for server in list(self.idle):
            if now - server.idle_since >= self.idle_seconds:
                self.idle.remove(server)
                self._spawn(self._retire(server))

    async def _start(self) -> None:
        server = None
        try:
            assert self.static is not None
            user = self.executions.acquire()
            server = Server(user, self.home.mkdtemp("warm-"))
            if user is not None:
                os.chown(server.slot, *user)
            self.servers.add(server)
            await off_loop(server.spawn, self.static, self.python, self.env, 1 << 20)
            server.send({"seccomp": seccomp.compile_filter(self.network).hex()})
            await server.receive(STARTUP)
            self._prepare(server)
        except Exception:
            if server is not None:
                await self._retire(server)
            return
        finally:
            self.starting -= 1
        self.give_back(server)

    async def _retire(self, server: Server) -> None:
        await off_loop(server.stop)
        await soon(remove_tree, server.slot)
        if server in self.servers:
            self.servers.discard(server)
            if server.keeps_user:
                self.executions.release(server.user)

    def _spawn(self, work: Any) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def warm_up(self, count: int) -> int:
        """Start servers until ``count`` are ready (at most the size); how many are."""
        count = min(count, self.size)
        while len(self.servers) + self.starting < count:
            self.starting += 1
            self._spawn(self._start())
        await self.settle()
        return len(self.servers)

    async def settle(self) -> None:
        """Wait for the background work of this event loop (starts, retirements) to end."""
        loop = asyncio.get_running_loop()
        while tasks := {task for task in self.tasks if task.get_loop() is loop}:
            await asyncio.wait(tasks)

    async def close(self) -> None:
        for task in list(self.tasks):
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        self.idle.clear()
        for server in list(self.servers):
            await self._retire(server)

    def close_now(self) -> None:
        """Kill every server, with no event loop (at interpreter exit)."""
        for server in list(self.servers):
            server.stop()
        self.servers.clear()
        self.idle.clear()

    # -- one run ----------------------------------------------------------------------------
    async def run(self, command: Command, execution: Execution, limits: Any) -> Outcome | None:
        """Run ``command`` warm, or None if no server is free soon enough (nothing done)."""
        server = await self.claim(command.remaining())
        if server is None:
            return None
        self.busy += 1
        try:
            return await self._run(server, command, execution, limits)
        except _NotStarted:
            # The server is broken; its identity goes with the files to the cold run.
            server.keeps_user, execution.lent = False, False
            return None
        finally:
            self.busy -= 1
            self.give_back(server)

    async def _run(
        self, server: Server, command: Command, execution: Execution, limits: Any
    ) -> Outcome:
        execution.user, execution.lent = server.user, True
        await soon(self.executions.prepare, execution, limits)
        place = os.path.join(server.slot, "run")
        cgroup = None
        try:
            await soon(move_entries, execution.host, place)
            cgroup = self.keeper.new(limits)
            outcome = await self._supervised(server, command, limits, cgroup)
            usage = cgroup.usage() if cgroup is not None else None
        finally:
            if cgroup is not None:
                self._spawn(self.keeper.retire(cgroup))
            with anyio.CancelScope(shield=True):
                await soon(move_entries, place, execution.host)
                await soon(remove_tree, place)
                if not server.broken:
                    try:
                        await soon(self._prepare, server)
                    except OSError:
                        server.broken = True
        self.runs += 1
        return translate(outcome, usage)

    def _prepare(self, server: Server, budget: object = None) -> None:
        """Make the next run's directory and have the server set that run up."""
        _make_place(os.path.join(server.slot, "run"), server.user)
        server.pids.clear()
        server.send({"prepare": {"network": self.network}})

    async def _supervised(self, server: Server, command: Command, limits: Any,
                          cgroup: _cgroups.RunCgroup | None) -> Outcome:  # fmt: skip
        at = time.perf_counter()
        try:
            with anyio.fail_after(min(max(command.remaining(), 0.001), STARTUP)):
                while len(server.pids) < 2:
                    message = await server.receive(STARTUP)
                    for role in ("init", "program"):
                        if role in message:
                            server.pids[role] = message["pid"]
            for pid in server.pids.values():
                if cgroup is not None:
                    cgroup.attach(pid)
            pidfd = os.pidfd_open(server.pids["init"])
        except (EnvironmentUnavailableError, OSError, KeyError, TimeoutError) as exc:
            server.broken = True
            raise _NotStarted(str(exc)) from exc
        ours, theirs = _pipes(server.user)
        try:
            server.send(_request(command, limits), theirs)
        except EnvironmentUnavailableError as exc:
            for fd in ours:
                os.close(fd)
            os.close(pidfd)
            raise _NotStarted(str(exc)) from exc
        finally:
            for fd in theirs:
                os.close(fd)
        pid = server.pids["init"]
        run = _Run(server, pid, pidfd, _Pipes(pid, *ours), cgroup)
        return await supervise(
            Started(run, at),
            timeout=command.remaining(),
            stdin=command.stdin,
            max_output_bytes=command.max_output_bytes,
            on_stdout=command.on_stdout,
            on_stderr=command.on_stderr,
            kill_grace=self.kill_grace,
            groups=self.groups,
        )


def _make_place(path: str, user: tuple[int, int] | None) -> None:
    os.mkdir(path, 0o700)
    if user is not None:
        os.chown(path, *user)


def _pipes(user: tuple[int, int] | None) -> tuple[tuple[int, int, int], tuple[int, int, int]]:
    """The run's pipes: (our stdin, stdout, stderr ends), (theirs), theirs owned by ``user``
    (so that /dev/stdin and friends can be reopened)."""
    stdin_read, stdin_write = os.pipe()
    stdout_read, stdout_write = os.pipe()
    stderr_read, stderr_write = os.pipe()
    theirs = (stdin_read, stdout_write, stderr_write)
    if user is not None:
        for fd in theirs:
            os.fchown(fd, *user)
    return (stdin_write, stdout_read, stderr_read), theirs


def _request(command: Command, limits: Any) -> dict[str, Any]:
    rlimits: dict[str, list[int]] = {}
    if limits.open_files is not None:
        rlimits["nofile"] = [limits.open_files, limits.open_files]
    if limits.disk is not None:
        rlimits["fsize"] = [limits.disk, limits.disk]
    if limits.cpu_time is not None:
        seconds = math.ceil(limits.cpu_time)
        rlimits["cpu"] = [seconds, seconds + 1]
    return {
        "argv": list(command.argv),
        "env": dict(command.env),
        "cwd": command.cwd,
        "rlimits": rlimits,
        "tmp_size": disk(limits),
        "shm_size": disk(limits),
    }
