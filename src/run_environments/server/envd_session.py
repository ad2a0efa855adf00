"""One E2B-style sandbox session: a persistent home and ``/tmp``, and the processes in them.

E2B sandboxes keep their files between commands, so unlike an execution this session keeps a
host directory for ``/home/user`` and one for ``/tmp``; each command still runs in a sandbox of
its own (bubblewrap, seccomp, a cgroup), with those two directories bound in.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import stat
import tempfile
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any

import anyio

from .._signals import GO_NAMES
from .._workspace import remove_tree
from ..environments.sandbox import SandboxRunEnvironment
from ..environments.sandbox import bwrap as bubblewrap
from ..environments.sandbox.launch import Sandbox

HOME = "/home/user"
TMP = "/tmp"


class PathError(Exception):
    """A path outside what the session lets clients touch, or one that does not exist."""

    def __init__(self, message: str, missing: bool = False) -> None:
        self.missing = missing
        super().__init__(message)


@dataclass
class Event:
    """What happened to a process: ``start``, ``stdout``/``stderr`` data, or ``end``."""

    kind: str
    data: bytes = b""
    exit_code: int = 0
    status: str = ""
    error: str | None = None


@dataclass
class Process:
    """A command running in the session, with every event it has had so far."""

    pid: int
    argv: list[str]
    envs: dict[str, str]
    cwd: str
    tag: str | None
    sandbox: Sandbox
    events: list[Event] = field(default_factory=list)
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    writing: anyio.Lock = field(default_factory=anyio.Lock)
    done: bool = False

    def publish(self, event: Event) -> None:
        self.events.append(event)
        self.changed.set()
        self.changed = asyncio.Event()

    async def follow(self, since: int = 0) -> AsyncIterator[Event]:
        """Events from index ``since`` on, until the end event."""
        index = since
        while True:
            while index < len(self.events):
                event = self.events[index]
                index += 1
                yield event
                if event.kind == "end":
                    return
            await self.changed.wait()

    async def write(self, data: bytes) -> None:
        """Feed stdin without blocking the server: the program drains its output meanwhile."""
        async with self.writing:
            fd = self._stdin().fileno()
            os.set_blocking(fd, False)
            view = memoryview(data)
            while view:
                await anyio.wait_writable(fd)
                try:
                    view = view[os.write(fd, view[: 1 << 16]) :]
                except BlockingIOError:
                    continue

    def close_stdin(self) -> None:
        with contextlib.suppress(OSError):
            self._stdin().close()

    def _stdin(self) -> Any:
        started = self.sandbox.started
        if started is None or started.child.proc.stdin is None or started.child.proc.stdin.closed:
            raise PathError(f"process {self.pid} has no open standard input")
        return started.child.proc.stdin

    def signal(self, sig: int) -> None:
        if self.sandbox.started is not None and not self.done:
            self.sandbox.signal(self.sandbox.started.pid, sig)


class Session:
    """The state behind the E2B-compatible API of one server."""

    def __init__(self, env: SandboxRunEnvironment, parent: str | None = None) -> None:
        self.env = env
        self.root = tempfile.mkdtemp(prefix="runenv-e2b-", dir=parent or env._tmp_dir)
        os.chmod(self.root, 0o755)
        self.bases = {HOME: os.path.join(self.root, "home"), TMP: os.path.join(self.root, "tmp")}
        for base in self.bases.values():
            os.mkdir(base, 0o755)
            env.own(base)
        self.processes: dict[int, Process] = {}
        self._pids = iter(range(1000, 1 << 30))
        self._tasks: set[asyncio.Task[None]] = set()

    # -- processes ------------------------------------------------------------------------
    async def spawn(
        self, argv: list[str], envs: dict[str, str], cwd: str | None, tag: str | None
    ) -> Process:
        cwd = cwd or HOME
        base, relative = self.locate(cwd)
        with self._beneath(base, relative, create=True):
            pass  # the working directory must exist before bubblewrap sets up
        env = {"PATH": bubblewrap.PATH, "HOME": HOME, "USER": "user", "LANG": "C.UTF-8"}
        env.update(envs)
        sandbox = await self.env.open_process(
            argv,
            home=self.bases[HOME],
            workdir=HOME,
            binds=[(self.bases[TMP], TMP)],
            cwd=cwd,
            env=env,
        )
        process = Process(next(self._pids), argv, dict(envs), cwd, tag, sandbox)
        self.processes[process.pid] = process
        process.publish(Event("start"))
        task = asyncio.get_running_loop().create_task(self._pump(process))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return process

    def _owner(self) -> tuple[int, int]:
        return self.env._user or (os.getuid(), os.getgid())

    async def _pump(self, process: Process) -> None:
        started = process.sandbox.started
        assert started is not None
        child = started.child
        try:
            async with anyio.create_task_group() as tg:
                for name in ("stdout", "stderr"):
                    pipe = getattr(child.proc, name)
                    tg.start_soon(self._drain, process, name, pipe.fileno())
                await child.exited()
            code, _ = child.reap()
        finally:
            child.close()
            await self.env.close_process(process.sandbox)
            process.done = True
        exit_code, status = _describe(code)
        error = status if status.startswith("signal: ") else None
        process.publish(Event("end", exit_code=exit_code, status=status, error=error))

    @staticmethod
    async def _drain(process: Process, name: str, fd: int) -> None:
        os.set_blocking(fd, False)
        while True:
            await anyio.wait_readable(fd)
            try:
                chunk = os.read(fd, 1 << 16)
            except BlockingIOError:
                continue
            if not chunk:
                return
            process.publish(Event(name, chunk))

    def process(self, pid: int) -> Process:
        if pid not in self.processes or self.processes[pid].done:
            raise PathError(f"process with pid {pid} not found", missing=True)
        return self.processes[pid]

    def running(self) -> list[Process]:
        return [p for p in self.processes.values() if not p.done]

    async def close(self) -> None:
        """Kill every process and remove the session's files."""
        for process in self.running():
            process.signal(signal.SIGKILL)
        tasks = list(self._tasks)
        if tasks:
            await asyncio.wait(tasks, timeout=10)
        remove_tree(self.root)

    # -- paths ----------------------------------------------------------------------------
    def locate(self, path: str) -> tuple[str, list[str]]:
        """The host base directory and the components under it of a sandbox path."""
        normal = os.path.normpath(path if path.startswith("/") else os.path.join(HOME, path))
        for prefix, base in self.bases.items():
            if normal == prefix or normal.startswith(prefix + "/"):
                rest = normal[len(prefix) :].strip("/")
                return base, rest.split("/") if rest else []
        raise PathError(f"{path}: only {HOME} and {TMP} are reachable here")

    @contextlib.contextmanager
    def _beneath(self, base: str, parts: list[str], create: bool = False) -> Iterator[int]:
        """An open directory descriptor for ``base/parts``, never through a link (the
        sandboxed code may have made some); missing directories are made with ``create``."""
        fds = [os.open(base, os.O_RDONLY | os.O_DIRECTORY)]
        try:
            for part in parts:
                flags = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW
                try:
                    fds.append(os.open(part, flags, dir_fd=fds[-1]))
                except FileNotFoundError:
                    if not create:
                        raise
                    os.mkdir(part, 0o755, dir_fd=fds[-1])
                    fds.append(os.open(part, flags, dir_fd=fds[-1]))
                    os.fchown(fds[-1], *self._owner())
            yield fds[-1]
        finally:
            for fd in fds:
                os.close(fd)

    @contextlib.contextmanager
    def parent_of(self, path: str, create: bool = False) -> Iterator[tuple[int, str]]:
        """The parent directory's descriptor and the last component of ``path``."""
        base, parts = self.locate(path)
        if not parts:
            raise PathError(f"{path}: the operation needs a path inside it")
        try:
            with self._beneath(base, parts[:-1], create) as fd:
                yield fd, parts[-1]
        except (FileNotFoundError, NotADirectoryError) as exc:
            raise PathError(f"{path}: no such file or directory", missing=True) from exc
        except OSError as exc:
            raise PathError(f"{path}: {exc.strerror}") from exc

    def read(self, path: str, limit: int = 256 << 20) -> bytes:
        with self.parent_of(path) as (parent, name):
            try:
                fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK, dir_fd=parent)
            except FileNotFoundError as exc:
                raise PathError(f"{path}: no such file", missing=True) from exc
            with os.fdopen(fd, "rb") as fh:
                if not stat.S_ISREG(os.fstat(fd).st_mode):
                    raise PathError(f"{path}: not a regular file")
                return fh.read(limit)

    def write(self, path: str, data: bytes) -> str:
        with self.parent_of(path, create=True) as (parent, name):
            flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW
            fd = os.open(name, flags, 0o644, dir_fd=parent)
            with os.fdopen(fd, "wb") as fh:
                os.fchown(fd, *self._owner())
                fh.write(data)
        base, parts = self.locate(path)
        return "/".join([HOME if base == self.bases[HOME] else TMP, *parts])

    def stat(self, path: str) -> tuple[str, os.stat_result, str | None]:
        """The sandbox path, its lstat, and where it links to if it is a link."""
        base, parts = self.locate(path)
        prefix = HOME if base == self.bases[HOME] else TMP
        if not parts:
            return prefix, os.stat(base), None
        with self.parent_of(path) as (parent, name):
            try:
                info = os.stat(name, dir_fd=parent, follow_symlinks=False)
            except FileNotFoundError as exc:
                raise PathError(f"{path}: no such file or directory", missing=True) from exc
            target = os.readlink(name, dir_fd=parent) if stat.S_ISLNK(info.st_mode) else None
        return "/".join([prefix, *parts]), info, target

    def list(self, path: str) -> list[str]:
        base, parts = self.locate(path)
        try:
            with self._beneath(base, parts) as fd:
                return sorted(os.listdir(fd))
        except (FileNotFoundError, NotADirectoryError) as exc:
            raise PathError(f"{path}: no such directory", missing=True) from exc

    def make_dir(self, path: str) -> bool:
        """Make ``path`` and its parents; False if it already existed."""
        base, parts = self.locate(path)
        with self._beneath(base, parts[:-1], create=True) as parent:
            try:
                os.mkdir(parts[-1], 0o755, dir_fd=parent)
            except FileExistsError:
                return False
            fd = os.open(parts[-1], os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=parent)
            os.fchown(fd, *self._owner())
            os.close(fd)
        return True

    def remove(self, path: str) -> None:
        with self.parent_of(path) as (parent, name):
            try:
                info = os.stat(name, dir_fd=parent, follow_symlinks=False)
            except FileNotFoundError as exc:
                raise PathError(f"{path}: no such file or directory", missing=True) from exc
            if stat.S_ISDIR(info.st_mode):
                shutil.rmtree(name, dir_fd=parent)
            else:
                os.unlink(name, dir_fd=parent)

    def move(self, source: str, destination: str) -> None:
        with (
            self.parent_of(source) as (src, src_name),
            self.parent_of(destination, True) as (
                dst,
                dst_name,
            ),
        ):
            try:
                os.rename(src_name, dst_name, src_dir_fd=src, dst_dir_fd=dst)
            except FileNotFoundError as exc:
                raise PathError(f"{source}: no such file or directory", missing=True) from exc


def _describe(code: int) -> tuple[int, str]:
    """envd's exit code and status text for a wait status (bubblewrap's 128+N is signal N)."""
    sig = -code if code < 0 else (code - 128 if 128 < code < 128 + signal.NSIG else 0)
    if sig:
        with contextlib.suppress(ValueError):
            return -1, f"signal: {GO_NAMES.get(signal.Signals(sig), f'signal {sig}')}"
    return code, f"exit status {code}"
