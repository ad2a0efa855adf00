"""Warm Python runs: fork servers (``zygote.py``) inside bubblewrap, each serving one run at
a time in fresh namespaces, a cgroup of its own and the sandbox's seccomp filter.

A run of ``python3 script args`` in the workspace (no compile stage, no areas beyond the
workspace, no variable that changes how the interpreter starts) is handed to an idle server;
the run's pipes are passed over the server's control socket and supervised here as any other
program's. Each server holds one identity of the environment for its life and a directory
of its own on the host (bound at ``/tmp``, where each run mounts its own ``/tmp``), where
each run's files are moved in before and out after, into a directory made for that run
alone. Every other run, and every run that
finds no idle server soon enough, goes the cold way (a sandbox of its own).

The pool starts servers as runs arrive, up to its size, in the background; one idle for
``idle`` seconds is stopped.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import resource
import signal
import socket
import struct
import subprocess
import time
from pathlib import Path
from typing import Any

import anyio

from ..._errors import EnvironmentUnavailableError, InvalidOptionsError
from ..._models import Limits
from ..._process import Outcome, ProcessGroups, Started, _Child, supervise
from ..._workspace import off_loop, remove_tree, soon
from ..command import Command, rlimits
from . import bwrap as bubblewrap
from . import cgroups as _cgroups
from . import seccomp
from .instance import InstanceDirectory
from .launch import _members, _signal_all, move_entries
from .outcomes import DEFAULT_LIMITS, disk, translate
from .workspaces import Execution, Executions

SOURCE = Path(__file__).with_name("zygote.py").read_text()
WAIT = 0.05
"""Seconds a run waits for a busy pool's next free server before it goes the cold way."""
STARTUP = 30.0
"""Seconds a server may take to start."""
STARTUP_VARIABLES = ("PYTHON", "LC_", "LANG")
"""Prefixes of variables that change how the interpreter starts: such runs go the cold way."""
UNBUFFERED = ("PYTHONUNBUFFERED", "1")
"""What streaming runs set (see the language table): the server gives the program unbuffered
standard streams, as the interpreter would."""
_CREDENTIALS = struct.calcsize("3i")
_log = logging.getLogger(__name__)


def default_size() -> int:
    """Servers at most: two per core (a run waiting on I/O leaves its core to another)."""
    return max(2, 2 * (os.cpu_count() or 1))


def settings(warm: bool | None, size: int | None) -> tuple[bool, int]:
    """Whether runs go warm and how many servers at most: the arguments, else
    ``$RUNENV_WARM`` (``0``/``1``) and ``$RUNENV_WARM_SIZE``, else on and
    :func:`default_size`.

    :raises InvalidOptionsError: naming the variable or argument that is not valid.
    """
    if warm is None:
        value = os.environ.get("RUNENV_WARM", "1").strip().lower()
        if value not in ("0", "1", "true", "false", "on", "off", "yes", "no"):
            raise InvalidOptionsError(f"RUNENV_WARM must be 0 or 1, not {value!r}")
        warm = value in ("1", "true", "on", "yes")
    if size is None:
        value = os.environ.get("RUNENV_WARM_SIZE", "").strip()
        try:
            size = int(value) if value else default_size()
        except ValueError:
            raise InvalidOptionsError(
                f"RUNENV_WARM_SIZE must be a whole number, not {value!r}"
            ) from None
    if size < 0:
        raise InvalidOptionsError(f"the warm pool's size must be 0 or more, not {size}")
    return warm, size


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
    """A warm run as supervision sees it: its runner (a pidfd), which reports the status of
    the init of the run's PID namespace on the control socket just before it exits; a kill
    goes to the run's cgroup and to that init."""

    def __init__(self, server: Server, ahead: Ahead, pidfds: tuple[int, int], pipes: _Pipes,
                 cgroup: _cgroups.RunCgroup | None) -> None:  # fmt: skip
        self.proc = pipes  # type: ignore[assignment]
        self.pid = ahead.pids["init"]
        self.server = server
        self.ahead = ahead
        self.pidfd: int | None = pidfds[0]
        self.init_fd: int | None = pidfds[1]
        self.cgroup = cgroup
        self.deliver = self._deliver

    def _deliver(self, _pid: int, sig: int) -> None:
        if sig == signal.SIGKILL:
            if self.cgroup is not None:
                self.cgroup.kill()
            if self.init_fd is not None:
                with contextlib.suppress(ProcessLookupError, OSError):
                    signal.pidfd_send_signal(self.init_fd, signal.SIGKILL)
        elif self.cgroup is not None:  # the init ignores it; its program may not
            _signal_all(_members(self.cgroup), sig)

    def reap(self) -> tuple[int, resource.struct_rusage]:
        if self.proc.returncode is None:
            self.server.collect()  # the status was sent before the init's end
            status = self.ahead.said.get("status")
            self.proc.returncode = status if isinstance(status, int) else -signal.SIGKILL
        return self.proc.returncode, resource.struct_rusage((0.0, 0.0) + (0,) * 14)

    def running(self) -> bool:
        return self.proc.returncode is None

    def close(self) -> None:
        for fd in (self.pidfd, self.init_fd):
            if fd is not None:
                os.close(fd)
        self.pidfd = None
        self.init_fd = None
        for pipe in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            if pipe is not None:
                pipe.close()


class Ahead:
    """A run set up ahead in a server: its directory and what its processes said."""

    def __init__(self, number: int, place: str) -> None:
        self.number = number
        self.place = place
        self.pids: dict[str, int] = {}
        self.said: dict[str, Any] = {}
        self.socket: socket.socket | None = None
        """The program's own socket, where its run is sent."""
        self.ready: asyncio.Task[None] | None = None
        """Done once its processes said who they are and sit in ``cgroup``."""
        self.cgroup: _cgroups.RunCgroup | None = None
        self.limits: Limits | None = None
        """The limits ``cgroup`` was made with."""

    def close(self) -> None:
        if self.socket is not None:
            self.socket.close()
            self.socket = None


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
        self.said: dict[str, Any] = {}
        """What the server itself said (``ready``)."""
        self.runs: dict[int, Ahead] = {}
        """The runs set up or under way, by number."""
        self.ahead: Ahead | None = None
        """The run set up for the next request."""
        self.numbers = 0
        self._waiting: asyncio.Future[None] | None = None
        self.idle_since = time.monotonic()

    # -- messages ------------------------------------------------------------------------
    def collect(self) -> None:
        """Take every message waiting, each to the run it is about (a program's socket
        with it); at the end of the server's side, the server is broken."""
        while not self.broken:
            try:
                data, ancillary, _, _ = self.channel.recvmsg(
                    1 << 16, socket.CMSG_SPACE(_CREDENTIALS) + socket.CMSG_SPACE(4)
                )
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                self.broken = True
                return
            if not data:
                self.broken = True
                return
            self._file(json.loads(data), ancillary)
            if self._waiting is not None and not self._waiting.done():
                self._waiting.set_result(None)

    def _file(self, message: dict[str, Any], ancillary: list[tuple[int, int, bytes]]) -> None:
        pid = None
        fds: list[int] = []
        for level, kind, payload in ancillary:
            if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS:
                pid = struct.unpack("3i", payload[:_CREDENTIALS])[0]
            elif level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                fds += struct.unpack(f"{len(payload) // 4}i", payload[: len(payload) // 4 * 4])
        run = self.runs.get(message.get("id", -1)) if isinstance(message, dict) else None
        for fd in fds[1:] if run is not None and "program" in message else fds:
            os.close(fd)  # nothing else is sent with a descriptor
        if run is None:
            if isinstance(message, dict) and "id" not in message:
                self.said.update(message)
            return
        if "program" in message and fds:
            run.socket = socket.socket(fileno=fds[0])
            run.socket.setblocking(False)
        for role in ("runner", "init", "program"):
            if role in message and pid is not None:
                run.pids[role] = pid
        run.said.update(message)

    async def wait(self, ready: Any, timeout: float) -> None:
        """Wait until ``ready()`` (messages collected meanwhile) or ``timeout`` passes.

        :raises EnvironmentUnavailableError: if the server is gone or says what failed, or
            does not answer in time.
        """
        with anyio.move_on_after(max(timeout, 0.001)):
            while True:
                self.collect()
                errors = [run.said["error"] for run in self.runs.values() if "error" in run.said]
                if errors or "error" in self.said:
                    self.broken = True
                    error = errors[0] if errors else self.said["error"]
                    raise EnvironmentUnavailableError(f"warm run failed: {error}")
                if ready():
                    return
                if self.broken:
                    raise EnvironmentUnavailableError("the warm server ended")
                await self._news()
        self.broken = True
        raise EnvironmentUnavailableError(f"the warm server did not answer within {timeout:g} s")

    async def _news(self) -> None:
        """Until the socket is readable, or a message was collected elsewhere (a run's
        supervision collects its status, and with it what the run set up next said)."""
        loop = asyncio.get_running_loop()
        news: asyncio.Future[None] = loop.create_future()
        self._waiting = news

        def readable() -> None:
            if not news.done():
                news.set_result(None)

        loop.add_reader(self.channel.fileno(), readable)
        try:
            await news
        finally:
            loop.remove_reader(self.channel.fileno())
            self._waiting = None

    def send(self, message: dict[str, Any]) -> None:
        try:
            self.channel.send(json.dumps(message).encode())
        except OSError as exc:
            self.broken = True
            raise EnvironmentUnavailableError(f"the warm server is gone: {exc}") from None

    def prepare(self, network: bool, budget: object = None) -> None:
        """Have the next run set up: its directory made, the server told (blocking, brief)."""
        self.numbers += 1
        ahead = Ahead(self.numbers, f"run-{self.numbers}")
        _make_place(os.path.join(self.slot, ahead.place), self.user)
        self.runs[ahead.number] = self.ahead = ahead
        self.send({"prepare": {"id": ahead.number, "place": ahead.place, "network": network}})

    def forget(self, ahead: Ahead) -> None:
        ahead.close()
        self.runs.pop(ahead.number, None)

    # -- life ------------------------------------------------------------------------------
    def spawn(self, static: list[str], python: str, env: dict[str, str], sizes: int) -> None:
        """Start bubblewrap with the server in it (blocking, as briefly as any spawn)."""
        passwd = bubblewrap.data_fd(bubblewrap.PASSWD.encode())
        group = bubblewrap.data_fd(bubblewrap.GROUP.encode())
        control = self._theirs.fileno()
        argv = [*_keep_capabilities(static), "--size", str(sizes), "--tmpfs", "/dev/shm",
                "--dir", bubblewrap.WORKDIR, "--bind", self.slot, "/tmp", "--chdir", "/",
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
        for ahead in list(self.runs.values()):
            self.forget(ahead)
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
        self.last_limits = DEFAULT_LIMITS
        """The limits of the last run: a run set up ahead gets a cgroup with them."""
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
            self.env.get(name) == value or (name, value) == UNBUFFERED
            for name, value in command.env.items()
            if name.startswith(STARTUP_VARIABLES)
        )

    # -- the pool -------------------------------------------------------------------------
    async def claim(self, timeout: float) -> Server | None:
        """An idle server, or one freed within ``timeout``; None sends the run the cold way
        (and has a server started for the runs to come, if the pool may grow)."""
        while self.idle:
            server = self.idle.pop()
            if server.process is not None and server.process.poll() is not None:
                server.broken = True  # died while idle (its namespace dies with it)
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
            # On this thread, as every sandbox: bubblewrap dies with the thread that started
            # it (--die-with-parent), and a worker thread may end before the server.
            server.spawn(self.static, self.python, self.env, 1 << 20)
            server.send({"seccomp": seccomp.compile_filter(self.network).hex()})
            await server.wait(lambda: "ready" in server.said, STARTUP)
            self._set_up(server)
        except Exception:
            if server is not None:
                await self._retire(server)
            return
        finally:
            self.starting -= 1
        self.give_back(server)

    def _set_up(self, server: Server, budget: object = None) -> None:
        """Have the server set the next run up, and put it in a cgroup once it is there."""
        server.prepare(self.network)
        assert server.ahead is not None
        ahead = server.ahead
        ahead.ready = asyncio.get_running_loop().create_task(self._ready(server, ahead))
        self.tasks.add(ahead.ready)
        ahead.ready.add_done_callback(self.tasks.discard)

    async def _ready(self, server: Server, ahead: Ahead) -> None:
        """Wait for a run set up ahead to say who its processes are, then make its cgroup
        and put them in it (in a worker thread: a move between cgroups takes a while)."""
        await server.wait(lambda: len(ahead.pids) == 3 and ahead.socket is not None, STARTUP)
        ahead.limits = self.last_limits
        ahead.cgroup = await off_loop(self._cgroup, ahead.pids, ahead.limits)

    def _cgroup(self, pids: dict[str, int], limits: Limits) -> _cgroups.RunCgroup | None:
        cgroup = self.keeper.new(limits)
        if cgroup is not None:
            try:
                for role in ("init", "program"):  # the runner stays outside, as bubblewrap
                    cgroup.attach(pids[role])
            except BaseException:
                cgroup.kill()
                cgroup.remove()
                raise
        return cgroup

    def _drop(self, server: Server, ahead: Ahead) -> None:
        """Be done with a run set up ahead: its task, its cgroup, its socket."""
        if ahead.ready is not None and not ahead.ready.done():
            ahead.ready.cancel()
        if ahead.cgroup is not None:
            self._spawn(self.keeper.retire(ahead.cgroup))
            ahead.cgroup = None
        server.forget(ahead)

    async def _retire(self, server: Server) -> None:
        for ahead in list(server.runs.values()):
            self._drop(server, ahead)
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
    async def run(self, command: Command, execution: Execution, limits: Limits) -> Outcome | None:
        """Run ``command`` warm, or None if no server is free soon enough (nothing done)."""
        server = await self.claim(command.remaining())
        if server is None:
            return None
        self.busy += 1
        try:
            return await self._run(server, command, execution, limits)
        except _NotStarted as exc:
            _log.warning("a warm run did not start (%s); it goes the cold way", exc)
            # The server is broken; its identity goes with the files to the cold run.
            server.keeps_user, execution.lent = False, False
            return None
        finally:
            self.busy -= 1
            self.give_back(server)

    async def _run(
        self, server: Server, command: Command, execution: Execution, limits: Limits
    ) -> Outcome:
        ahead = server.ahead
        if ahead is None or server.broken:
            raise _NotStarted("no run is set up")
        execution.user, execution.lent = server.user, True
        await soon(self.executions.prepare, execution, limits)
        place = os.path.join(server.slot, ahead.place)
        try:
            await soon(move_entries, execution.host, place)
            outcome = await self._supervised(server, ahead, command, limits)
            usage = ahead.cgroup.usage() if ahead.cgroup is not None else None
        finally:
            self._drop(server, ahead)
            with anyio.CancelScope(shield=True):
                await soon(move_entries, place, execution.host)
                await soon(remove_tree, place)
        self.runs += 1
        return translate(outcome, usage)

    async def _supervised(
        self, server: Server, ahead: Ahead, command: Command, limits: Limits
    ) -> Outcome:
        at = time.perf_counter()
        self.last_limits = limits
        try:
            assert ahead.ready is not None
            await asyncio.wait({ahead.ready}, timeout=min(max(command.remaining(), 0.001), STARTUP))
            if not ahead.ready.done():
                raise EnvironmentUnavailableError("the run set up ahead was not ready in time")
            if ahead.ready.cancelled() or ahead.ready.exception() is not None:
                raise EnvironmentUnavailableError(f"warm set-up failed: {ahead.ready!r}")
            if ahead.cgroup is not None and ahead.limits != limits:
                self.keeper.relimit(ahead.cgroup, limits)
            pidfds = (os.pidfd_open(ahead.pids["runner"]), os.pidfd_open(ahead.pids["init"]))
        except (EnvironmentUnavailableError, OSError) as exc:
            server.broken = True
            raise _NotStarted(str(exc)) from exc
        ours, theirs = _pipes(server.user)
        try:
            assert ahead.socket is not None
            data = json.dumps(_request(command, limits)).encode()
            fds = struct.pack("3i", *theirs)
            ahead.socket.sendmsg([data], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, fds)])
        except OSError as exc:
            for fd in (*ours, *pidfds):
                os.close(fd)
            server.broken = True
            raise _NotStarted(str(exc)) from exc
        finally:
            for fd in theirs:
                os.close(fd)
        ahead.close()
        server.ahead = None
        try:  # the next run is set up while this one runs
            await soon(self._set_up, server)
        except (OSError, EnvironmentUnavailableError):
            server.broken = True
        run = _Run(server, ahead, pidfds, _Pipes(ahead.pids["init"], *ours), ahead.cgroup)
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


def _make_place(path: str, user: tuple[int, int] | None, budget: object = None) -> None:
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


def _request(command: Command, limits: Limits) -> dict[str, Any]:
    return {
        "argv": list(command.argv),
        "env": dict(command.env),
        "cwd": command.cwd,
        # What prlimit sets cold: memory and processes are the cgroup's.
        "rlimits": rlimits(limits, processes=False),
        "tmp_size": disk(limits),
        "shm_size": disk(limits),
    }
