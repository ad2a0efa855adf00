"""E2B-style sandbox sessions: a persistent home and ``/tmp``, and the processes in them.

E2B sandboxes keep their files between commands, so unlike an execution a session keeps a
host directory for ``/home/user`` and one for ``/tmp``; each command still runs in a sandbox of
its own (bubblewrap, seccomp, a cgroup), with those two directories bound in.

Every client identity (its token and the sandbox id it presents) has a session of its own:
a host uid of its own, its directories private to that uid and, as root, a file system of
bounded size. A command holds one of the server's execution slots while it runs and ends
at the server's longest timeout. Output goes to the clients attached to a command through
bounded buffers; nothing is kept for later.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import signal
import stat
from collections import OrderedDict
from collections.abc import Callable, Iterator
from contextlib import AsyncExitStack
from dataclasses import dataclass
from typing import Any

import anyio

from .._errors import EnvironmentUnavailableError, InvalidOptionsError
from .._models import _check_str_map
from .._signals import GO_NAMES, signal_of
from .._workspace import (
    describe,
    off_loop,
    open_beneath,
    open_regular,
    opened,
    remove_entry,
    remove_tree,
)
from ..environments.sandbox import LongLived, SandboxRunEnvironment, mounts
from ..environments.sandbox import bwrap as bubblewrap
from .admission import Admission
from .envd_process import Event, Follower, Process

HOME = "/home/user"
TMP = "/tmp"
READ_CHUNK = 1 << 16


class PathError(InvalidOptionsError):
    """A path outside what the session lets clients touch, or one that does not exist."""

    def __init__(self, message: str, missing: bool = False) -> None:
        self.missing = missing
        super().__init__(message)


@dataclass(frozen=True)
class SessionLimits:
    """What one session may use: bytes of files, and seconds of each command."""

    quota: int = 1 << 30
    process_seconds: float = 300.0


class Session:
    """The state behind the E2B-compatible API of one client identity."""

    def __init__(
        self, env: SandboxRunEnvironment, admission: Admission, limits: SessionLimits
    ) -> None:
        self.env = env
        self.admission = admission
        self.limits = limits
        self.user = env.acquire_identity()
        self.root = env.private_directory("e2b-")
        self.mounted = False
        try:
            if mounts.can_mount():
                mounts.mount_tmpfs(self.root, limits.quota, self._owner())
                self.mounted = True
            else:
                os.chmod(self.root, 0o700)
            self.bases = {
                HOME: os.path.join(self.root, "home"),
                TMP: os.path.join(self.root, "tmp"),
            }
            for base in self.bases.values():
                os.mkdir(base, 0o700)
                os.chown(base, *self._owner())
        except BaseException:
            self._remove()
            raise
        self.processes: dict[int, Process] = {}
        self._pids = iter(range(1000, 1 << 30))
        self._tasks: set[asyncio.Task[None]] = set()

    def _owner(self) -> tuple[int, int]:
        return self.user or (os.getuid(), os.getgid())

    # -- processes ------------------------------------------------------------------------
    async def spawn(
        self, argv: list[str], envs: dict[str, str], cwd: str | None, tag: str | None
    ) -> tuple[Process, Follower, AsyncExitStack]:
        """Start a command in a slot of its own; returns it with a follower attached from its
        first event (the caller closes the stack when it stops following)."""
        try:
            envs = _check_str_map("envs", envs)
        except InvalidOptionsError as exc:
            raise PathError(str(exc)) from None
        cwd = cwd or HOME
        base, parts = self.locate(cwd)
        await off_loop(self._make_directory, base, parts, cwd)  # it must exist for set-up
        env = {"PATH": bubblewrap.PATH, "HOME": HOME, "USER": "user", "LANG": "C.UTF-8"}
        env.update(envs)
        slot = self.admission.slot()
        await slot.__aenter__()
        try:
            spec = LongLived(
                argv=tuple(argv),
                home=self.bases[HOME],
                workdir=HOME,
                binds=((self.bases[TMP], TMP),),
                cwd=cwd,
                env=env,
                user=self.user,
            )
            handle = await self.env.open_process(spec)
        except BaseException:
            await slot.__aexit__(None, None, None)
            raise
        process = Process(next(self._pids), argv, dict(envs), cwd, tag, handle)
        self.processes[process.pid] = process
        stack = AsyncExitStack()
        follower = stack.enter_context(process.follow())
        await process.publish(Event("start"))
        task = asyncio.get_running_loop().create_task(self._pump(process, slot))
        self._tasks.add(task)  # it runs on its own: clients may come and go
        task.add_done_callback(self._tasks.discard)
        return process, follower, stack

    async def _pump(self, process: Process, slot: Any) -> None:
        async def output(name: str, data: bytes) -> None:
            await process.publish(Event(name, data))

        code = -signal.SIGKILL
        try:
            code = await process.handle.run(output, self.limits.process_seconds)
        finally:
            with anyio.CancelScope(shield=True):
                await process.handle.close()
                self.processes.pop(process.pid, None)
                await slot.__aexit__(None, None, None)
                exit_code, status = _describe(code)
                error = status if status.startswith("signal: ") else None
                await process.publish(Event("end", exit_code=exit_code, status=status, error=error))

    def process(self, pid: int) -> Process:
        if pid not in self.processes or self.processes[pid].done:
            raise PathError(f"process with pid {pid} not found", missing=True)
        return self.processes[pid]

    def running(self) -> list[Process]:
        return [p for p in self.processes.values() if not p.done]

    async def close(self) -> None:
        """Kill every process and remove the session's files."""
        for process in self.running():
            process.handle.signal(signal.SIGKILL)
        tasks = list(self._tasks)
        if tasks:
            await asyncio.wait(tasks, timeout=10)
        await off_loop(self._remove)

    def _remove(self) -> None:
        if self.mounted:
            mounts.unmount(self.root)
            self.mounted = False
        remove_tree(self.root)
        self.env.release_identity(self.user)
        self.user = None

    # -- paths ----------------------------------------------------------------------------
    def locate(self, path: str) -> tuple[str, list[str]]:
        """The host base directory and the components under it of a sandbox path."""
        if "\0" in path:
            raise PathError(f"{path!r}: a path may not contain NUL")
        normal = os.path.normpath(path if path.startswith("/") else os.path.join(HOME, path))
        for prefix, base in self.bases.items():
            if normal == prefix or normal.startswith(prefix + "/"):
                rest = normal[len(prefix) :].strip("/")
                return base, rest.split("/") if rest else []
        raise PathError(f"{path}: only {HOME} and {TMP} are reachable here")

    def _sandbox_path(self, base: str, parts: list[str]) -> str:
        return "/".join([HOME if base == self.bases[HOME] else TMP, *parts])

    @contextlib.contextmanager
    def _directory(self, path: str, parts: list[str], base: str, create: bool) -> Iterator[int]:
        """The open directory ``base/parts``, never through a link; errors as PathError."""
        try:
            with opened(base) as root:
                fd = open_beneath(root, parts, create=create, owner=self._owner())
        except (FileNotFoundError, NotADirectoryError) as exc:
            raise PathError(f"no such directory: {describe(path, exc)}", missing=True) from None
        except OSError as exc:
            raise PathError(f"cannot use {describe(path, exc)}") from None
        try:
            yield fd
        finally:
            os.close(fd)

    def _make_directory(self, base: str, parts: list[str], path: str) -> None:
        with self._directory(path, parts, base, create=True):
            pass

    @contextlib.contextmanager
    def _parent_of(self, path: str, create: bool = False) -> Iterator[tuple[int, str]]:
        base, parts = self.locate(path)
        if not parts:
            raise PathError(f"{path}: the operation needs a path inside it")
        with self._directory(path, parts[:-1], base, create) as fd:
            yield fd, parts[-1]

    def open_file(self, path: str) -> tuple[int, int]:
        """A descriptor to read the regular file ``path`` from, and its size (blocking)."""
        with self._parent_of(path) as (parent, name):
            try:
                fd = open_regular(parent, name, os.O_RDONLY)
            except FileNotFoundError as exc:
                raise PathError(f"{path}: no such file", missing=True) from exc
            except OSError as exc:
                raise PathError(f"cannot read {describe(path, exc)}") from None
        return fd, os.fstat(fd).st_size

    async def write(self, path: str, data: bytes) -> str:
        """Write ``data`` to ``path`` (a regular file, made with its directories)."""
        return await off_loop(self._write, path, data)

    def _write(self, path: str, data: bytes) -> str:
        with self._parent_of(path, create=True) as (parent, name):
            try:
                fd = open_regular(parent, name, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
            except OSError as exc:
                raise PathError(f"cannot write {describe(path, exc)}") from None
            with os.fdopen(fd, "wb") as fh:
                os.fchown(fd, *self._owner())
                try:
                    fh.write(data)
                    fh.flush()
                except OSError as exc:
                    raise PathError(f"cannot write {describe(path, exc)}") from None
        base, parts = self.locate(path)
        return self._sandbox_path(base, parts)

    async def stat(self, path: str) -> tuple[str, os.stat_result, str | None]:
        """The sandbox path, its lstat, and where it links to if it is a link."""
        return await off_loop(self._stat, path)

    def _stat(self, path: str) -> tuple[str, os.stat_result, str | None]:
        base, parts = self.locate(path)
        if not parts:
            return self._sandbox_path(base, parts), os.stat(base), None
        with self._parent_of(path) as (parent, name):
            try:
                info = os.stat(name, dir_fd=parent, follow_symlinks=False)
            except FileNotFoundError as exc:
                raise PathError(f"{path}: no such file or directory", missing=True) from exc
            target = os.readlink(name, dir_fd=parent) if stat.S_ISLNK(info.st_mode) else None
        return self._sandbox_path(base, parts), info, target

    async def list_dir(self, path: str, limit: int = 100_000) -> list[str]:
        """The names in the directory ``path`` (at most ``limit``)."""
        return await off_loop(self._list_dir, path, limit)

    def _list_dir(self, path: str, limit: int) -> list[str]:
        base, parts = self.locate(path)
        with self._directory(path, parts, base, create=False) as fd, os.scandir(fd) as entries:
            names: list[str] = []
            for entry in entries:
                if len(names) >= limit:
                    raise PathError(f"{path}: more than {limit} entries")
                names.append(entry.name)
        return sorted(names)

    async def make_dir(self, path: str) -> bool:
        """Make ``path`` and its parents; False if it already existed."""
        return await off_loop(self._make_dir, path)

    def _make_dir(self, path: str) -> bool:
        with self._parent_of(path, create=True) as (parent, name):
            try:
                os.mkdir(name, 0o755, dir_fd=parent)
            except FileExistsError:
                return False
            except OSError as exc:
                raise PathError(f"cannot make {describe(path, exc)}") from None
            fd = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=parent)
            os.fchown(fd, *self._owner())
            os.close(fd)
        return True

    async def remove(self, path: str) -> None:
        """Remove ``path``, a whole tree if it is a directory."""
        await off_loop(self._remove_path, path)

    def _remove_path(self, path: str) -> None:
        with self._parent_of(path) as (parent, name):
            try:
                os.stat(name, dir_fd=parent, follow_symlinks=False)
                remove_entry(parent, name)
            except FileNotFoundError as exc:
                raise PathError(f"{path}: no such file or directory", missing=True) from exc
            except OSError as exc:
                raise PathError(f"cannot remove {describe(path, exc)}") from None

    async def move(self, source: str, destination: str) -> None:
        await off_loop(self._move, source, destination)

    def _move(self, source: str, destination: str) -> None:
        with (
            self._parent_of(source) as (src, src_name),
            self._parent_of(destination, True) as (
                dst,
                dst_name,
            ),
        ):
            try:
                os.rename(src_name, dst_name, src_dir_fd=src, dst_dir_fd=dst)
            except FileNotFoundError as exc:
                raise PathError(f"{source}: no such file or directory", missing=True) from exc
            except OSError as exc:
                raise PathError(f"cannot move {describe(source, exc)}") from None


class Sessions:
    """The sessions of a server, one per client identity, at most ``limit`` at once: a new
    identity past it replaces the least recently used session that runs nothing."""

    def __init__(
        self,
        factory: Callable[[], Session],
        limit: int = 16,
    ) -> None:
        self.factory = factory
        self.limit = limit
        self._sessions: OrderedDict[str, Session] = OrderedDict()
        self._lock = anyio.Lock()

    @staticmethod
    def identity(token: str, sandbox_id: str) -> str:
        """A key for a client: its token (hashed) and the sandbox id it names."""
        return hashlib.sha256(f"{token}\0{sandbox_id}".encode(errors="replace")).hexdigest()

    async def get(self, key: str) -> Session:
        """The session of ``key``, made on first use.

        :raises EnvironmentUnavailableError: if every session is busy.
        """
        async with self._lock:
            if key in self._sessions:
                self._sessions.move_to_end(key)
                return self._sessions[key]
            if len(self._sessions) >= self.limit:
                idle = next((k for k, s in self._sessions.items() if not s.running()), None)
                if idle is None:
                    raise EnvironmentUnavailableError(
                        f"all {self.limit} sandbox sessions are running commands; retry later"
                    )
                await self._sessions.pop(idle).close()
            session = await off_loop(self.factory)
            self._sessions[key] = session
            return session

    async def close(self) -> None:
        while self._sessions:
            _, session = self._sessions.popitem()
            await session.close()


def _describe(code: int) -> tuple[int, str]:
    """envd's exit code and status text for a wait status (bubblewrap's 128+N is signal N)."""
    sig = signal_of(code)
    if sig is not None:
        return -1, f"signal: {GO_NAMES.get(sig, f'signal {sig.value}')}"
    return code, f"exit status {code}"
