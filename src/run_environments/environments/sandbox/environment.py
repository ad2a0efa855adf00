"""The sandbox environment: bubblewrap namespaces, a seccomp filter and a cgroup per run."""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import json
import math
import os
import shutil
import signal
import subprocess
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import anyio

from ..._errors import EnvironmentUnavailableError, InvalidOptionsError, RunEnvironmentError
from ..._languages import Language
from ..._models import ExecutionOptions, Limits, check_relative_path
from ..._process import Outcome, ProcessGroups, Spawn, run_process
from ..._workspace import (
    default_parent,
    reachable_by_others,
    remove_tree,
    temporary_directory,
    write_files,
)
from ..base import CommandRunEnvironment, EnvironmentStatus, Workspace
from . import bwrap as bubblewrap
from . import cgroups, seccomp

DEFAULT_LIMITS = Limits(
    memory=512 << 20, processes=256, disk=256 << 20, open_files=1024, cpu_time=None
)
"""Limits of every run unless the environment or the execution says otherwise."""


class _Run:
    """One sandboxed run's moving parts: its descriptors, cgroup and namespace init."""

    def __init__(self, cgroup: cgroups.RunCgroup | None) -> None:
        self.cgroup = cgroup
        self.init_pid: int | None = None
        self.started = False
        self.ours: list[int] = []  # kept by us
        self.theirs: list[int] = []  # passed to bubblewrap, closed once it has them

    def pipe(self) -> tuple[int, int]:
        read, write = os.pipe()
        self.ours.append(read)
        self.ours.append(write)
        return read, write

    def give(self, fd: int) -> int:
        if fd in self.ours:
            self.ours.remove(fd)
        self.theirs.append(fd)
        return fd

    def close_theirs(self) -> None:
        while self.theirs:
            os.close(self.theirs.pop())

    def close(self, fd: int) -> None:
        if fd in self.ours:
            self.ours.remove(fd)
            os.close(fd)

    def close_all(self) -> None:
        self.close_theirs()
        while self.ours:
            os.close(self.ours.pop())

    def signal(self, pid: int, sig: int) -> None:
        """Deliver ``sig`` to the sandboxed processes, not to bubblewrap's monitor: the
        monitor dies on SIGTERM and would take the program down with no grace."""
        if self.cgroup is not None:
            if sig == signal.SIGKILL:
                self.cgroup.kill()
            else:
                for member in _members(self.cgroup):
                    with contextlib.suppress(ProcessLookupError, PermissionError):
                        os.kill(member, sig)
        elif self.init_pid is not None and sig != signal.SIGKILL:
            for child in _children(self.init_pid):
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(child, sig)
        if sig == signal.SIGKILL:
            if self.init_pid is not None:  # the namespace dies with its init
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(self.init_pid, signal.SIGKILL)
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGKILL)


def _members(cgroup: cgroups.RunCgroup) -> list[int]:
    pids: set[int] = set()
    for directory in cgroup.directories:
        with contextlib.suppress(OSError):
            pids.update(int(p) for p in (directory / "cgroup.procs").read_text().split())
    return sorted(pids)


def _children(pid: int) -> list[int]:
    try:
        return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


async def _read_to_end(fd: int) -> bytes:
    os.set_blocking(fd, False)
    data = b""
    while True:
        await anyio.wait_readable(fd)
        try:
            chunk = os.read(fd, 4096)
        except BlockingIOError:
            continue
        if not chunk:
            return data
        data += chunk


class SandboxRunEnvironment(CommandRunEnvironment):
    """Runs code isolated on this machine, for code you did not write.

    Each run gets its own user, PID, mount, IPC, UTS, cgroup and network namespaces
    (bubblewrap), runs as an unprivileged uid with no capabilities and ``no_new_privs``, under
    a seccomp filter, in a cgroup that bounds its memory and processes, and sees only the
    host's system directories (read-only), a fresh workspace and a bounded ``/tmp``.

    :param network: give the program the host's network (weaker isolation; for installing
        packages inside). Without it the program has only its own loopback and may open no
        sockets but Unix ones.
    :param limits: defaults for every run's limits (see :class:`Limits`); an execution's
        ``options.limits`` override them field by field.
    :param tmp_dir: where workspaces are made on the host (see ``LocalRunEnvironment``).
    :param kill_grace: seconds between SIGTERM and SIGKILL when a run is stopped.
    :param bwrap: the bubblewrap program (default: ``bwrap`` on ``PATH``).
    """

    name = "sandbox"

    def __init__(
        self,
        *,
        network: bool = False,
        limits: Limits | None = None,
        tmp_dir: str | None = None,
        kill_grace: float = 0.5,
        bwrap: str | None = None,
    ) -> None:
        super().__init__()
        self.network = network
        self.limits = limits.over(DEFAULT_LIMITS) if limits is not None else DEFAULT_LIMITS
        self._kill_grace = kill_grace
        self._bwrap = bwrap or shutil.which("bwrap")
        self._prlimit = shutil.which("prlimit", path=bubblewrap.PATH)
        self._user = (bubblewrap.UID, bubblewrap.GID) if os.geteuid() == 0 else None
        self._tmp_dir = tmp_dir or default_parent(shared=self._user is not None)
        if self._user is not None and not reachable_by_others(self._tmp_dir):
            raise InvalidOptionsError(
                f"tmp_dir {self._tmp_dir!r} must be reachable by the sandbox's uid "
                f"{bubblewrap.UID}: a directory on the way to it is closed to other users"
            )
        self._cgroups = cgroups.detect()
        self._instance = uuid.uuid4().hex[:12]
        self._runs = itertools.count()
        self._groups = ProcessGroups()
        self._workspaces: set[str] = set()
        self._stale: list[cgroups.RunCgroup] = []
        self._static: list[str] | None = None
        self._problem: str | None = None
        self._checked = False

    # -- readiness ------------------------------------------------------------------------
    async def _check(self) -> str | None:
        """Why the sandbox cannot run here, or None; a real run decides, once."""
        if self._checked:
            return self._problem
        self._problem = self._static_problem()
        if self._problem is None:
            try:
                async with self._workspace() as workspace:
                    outcome = await self._sandboxed(
                        ["/bin/sh", "-c", "exit 0"], workspace, ExecutionOptions(), timeout=30
                    )
                if outcome.exit_code != 0:
                    self._problem = "a test run failed: " + outcome.stderr.decode(errors="replace")
            except RunEnvironmentError as exc:
                self._problem = str(exc)
        self._checked = True
        return self._problem

    def _static_problem(self) -> str | None:
        if self._bwrap is None:
            return "bubblewrap is not installed (apt-get install bubblewrap)"
        if not Path("/proc/self/ns/user").exists():
            return "this kernel has no user namespaces"
        try:
            seccomp.compile_filter(self.network)
        except EnvironmentUnavailableError as exc:
            return str(exc)
        return None

    async def is_ready(self) -> bool:
        return await self._check() is None and await super().is_ready()

    async def status(self) -> EnvironmentStatus:
        problem = await self._check()
        base = await super().status()
        notes = [self.limits_note()]
        if problem is not None:
            return dataclasses.replace(base, ready=False, reason=problem, notes=tuple(notes))
        return dataclasses.replace(base, notes=tuple(notes))

    def limits_note(self) -> str:
        """How limits are enforced here, for ``runenv doctor``."""
        if self._cgroups is None:
            return (
                "no usable cgroup memory and pids controllers: memory falls back to RLIMIT_DATA"
                " and processes to RLIMIT_NPROC (shared by every sandbox of this user)"
            )
        return f"limits enforced with {self._cgroups.describe()}"

    async def _which(self, program: str) -> str | None:
        if program == "{python}":
            return None  # this process's interpreter may live where the sandbox cannot see
        return shutil.which(program, path=bubblewrap.PATH)

    # -- workspace ------------------------------------------------------------------------
    @contextlib.asynccontextmanager
    async def _workspace(self) -> AsyncIterator[Workspace]:
        with temporary_directory(self._tmp_dir) as host:
            self._workspaces.add(host)
            try:
                self._own(host)
                yield Workspace(bubblewrap.WORKDIR, host=host)
            finally:
                self._workspaces.discard(host)

    async def _write(self, workspace: Workspace, files: dict[str, bytes]) -> None:
        assert workspace.host is not None
        write_files(workspace.host, files)
        for relative in files:
            for path in _with_parents(workspace.host, relative):
                self._own(path)

    def _own(self, path: str) -> None:
        if self._user is not None:
            os.chown(path, *self._user, follow_symlinks=False)

    def _cwd(self, workspace: Workspace, cwd: str | None) -> str:
        if cwd is None:
            return workspace.path
        if os.path.isabs(cwd):
            inside = os.path.normpath(cwd)
            if inside == "/tmp" or inside == workspace.path:
                return inside
            if inside.startswith(workspace.path + "/"):
                cwd = inside[len(workspace.path) + 1 :]
            else:
                raise InvalidOptionsError(
                    f"in the sandbox, cwd must be inside {workspace.path} or be /tmp, not {cwd!r}"
                )
        relative = check_relative_path(cwd)
        assert workspace.host is not None
        os.makedirs(os.path.join(workspace.host, relative), exist_ok=True)
        for path in _with_parents(workspace.host, relative, include_last=True):
            self._own(path)
        return f"{workspace.path}/{relative}"

    # -- running --------------------------------------------------------------------------
    async def _run(
        self,
        argv: list[str],
        workspace: Workspace,
        options: ExecutionOptions,
        *,
        timeout: float,
        language: Language,
        stdin: bytes | None,
        stream: bool,
    ) -> Outcome:
        problem = await self._check()
        if problem is not None:
            raise EnvironmentUnavailableError(f"the sandbox cannot run here: {problem}")
        env = {"PATH": bubblewrap.PATH, "HOME": workspace.path, "LANG": "C.UTF-8", "TMPDIR": "/tmp"}
        if stream and (options.on_stdout or options.on_stderr):
            env.update(language.stream_env)
        env.update(options.env)
        return await self._sandboxed(
            argv,
            workspace,
            options,
            timeout=timeout,
            env=env,
            stdin=stdin,
            stream=stream,
        )

    def _limit_argv(self, limits: Limits) -> list[str]:
        """rlimits, set inside the sandbox by prlimit just before the program starts."""
        if self._prlimit is None:
            return []
        args = [self._prlimit]
        if limits.open_files is not None:
            args.append(f"--nofile={limits.open_files}")
        if limits.disk is not None:
            args.append(f"--fsize={limits.disk}")
        if limits.cpu_time is not None:
            seconds = math.ceil(limits.cpu_time)  # SIGXCPU at the limit, SIGKILL a second on
            args.append(f"--cpu={seconds}:{seconds + 1}")
        if self._cgroups is None and limits.memory is not None:
            args.append(f"--data={limits.memory}")
        if self._cgroups is None and limits.processes is not None:
            args.append(f"--nproc={limits.processes}")
        return [*args, "--"] if len(args) > 1 else []

    def _static_arguments(self) -> list[str]:
        if self._static is None:
            assert self._bwrap is not None
            help_text = subprocess.run(
                [self._bwrap, "--help"], capture_output=True, text=True, check=False
            ).stdout
            self._static = [
                self._bwrap,
                *bubblewrap.static_arguments(
                    network=self.network, disable_userns="--disable-userns" in help_text
                ),
            ]
        return self._static

    async def _sandboxed(
        self,
        argv: list[str],
        workspace: Workspace,
        options: ExecutionOptions,
        *,
        timeout: float,
        env: dict[str, str] | None = None,
        stdin: bytes | None = None,
        stream: bool = False,
    ) -> Outcome:
        assert workspace.host is not None
        limits = options.limits.over(self.limits)
        cgroup = self._new_cgroup(limits)
        run = _Run(cgroup)
        try:
            info_read, info_write = run.pipe()
            block_read, block_write = run.pipe()
            fds = bubblewrap.Fds(
                seccomp=run.give(bubblewrap.data_fd(seccomp.compile_filter(self.network))),
                passwd=run.give(bubblewrap.data_fd(bubblewrap.PASSWD.encode())),
                group=run.give(bubblewrap.data_fd(bubblewrap.GROUP.encode())),
                info=run.give(info_write),
                block=run.give(block_read),
            )
            command = [
                *self._static_arguments(),
                *bubblewrap.run_arguments(
                    fds=fds,
                    workspace=workspace.host,
                    tmp_size=limits.disk or DEFAULT_LIMITS.disk or 0,
                    cwd=self._cwd(workspace, options.cwd),
                    env=env or {"PATH": bubblewrap.PATH},
                ),
                *self._limit_argv(limits),
                *argv,
            ]

            async def prepare(pid: int) -> None:
                run.close_theirs()
                info = await _read_to_end(info_read)
                if info:
                    run.started = True
                    run.init_pid = json.loads(info)["child-pid"]
                    if cgroup is not None:
                        with contextlib.suppress(ProcessLookupError):  # died in its set-up
                            cgroup.attach(run.init_pid)
                run.close(block_write)  # the sandbox goes on

            outcome = await run_process(
                command,
                cwd=workspace.host,
                env={},
                timeout=timeout,
                stdin=stdin,
                max_output_bytes=options.max_output_bytes,
                on_stdout=options.on_stdout if stream else None,
                on_stderr=options.on_stderr if stream else None,
                kill_grace=self._kill_grace,
                groups=self._groups,
                spawn=Spawn(
                    pass_fds=tuple(run.theirs),
                    user=self._user[0] if self._user else None,
                    group=self._user[1] if self._user else None,
                    prepare=prepare,
                    signal=run.signal,
                ),
            )
        finally:
            run.close_all()
            if cgroup is not None:
                usage = cgroup.usage()
                await self._retire(cgroup)
        if not run.started:
            message = outcome.stderr.decode(errors="replace").strip()
            raise EnvironmentUnavailableError(f"the sandbox did not start: {message}")
        return _translate(outcome, usage if cgroup is not None else None)

    def _new_cgroup(self, limits: Limits) -> cgroups.RunCgroup | None:
        if self._cgroups is None:
            return None
        name = f"{cgroups.PREFIX}{self._instance}-{next(self._runs)}"
        try:
            return self._cgroups.create(name, limits)
        except OSError as exc:
            raise EnvironmentUnavailableError(f"cannot create the run's cgroup: {exc}") from exc

    async def _retire(self, cgroup: cgroups.RunCgroup, within: float = 1.0) -> None:
        """Kill what is left in ``cgroup`` and remove it; a killed task may take a moment
        to leave, so keep trying briefly, and leave the rest to :meth:`cleanup`."""
        with anyio.CancelScope(shield=True), anyio.move_on_after(within):
            cgroup.kill()
            while not cgroup.remove():
                await anyio.sleep(0.005)
                cgroup.kill()
        if any(directory.exists() for directory in cgroup.directories):
            self._stale.append(cgroup)

    async def cleanup(self) -> None:
        """Kill every sandbox still running and remove every workspace and cgroup left."""
        self._groups.kill_all()
        stale = list(self._stale)
        if self._cgroups is not None:
            stale += list(self._cgroups.leftovers(f"{cgroups.PREFIX}{self._instance}-"))
        self._stale = []
        for cgroup in stale:
            await self._retire(cgroup, within=2.0)
        for path in list(self._workspaces):
            remove_tree(path)


def _translate(outcome: Outcome, usage: cgroups.Usage | None) -> Outcome:
    """bubblewrap reports a program killed by signal N as exit status 128+N."""
    changes: dict[str, Any] = {}
    code = outcome.exit_code
    if outcome.signal is None and code is not None and 128 < code < 128 + signal.NSIG:
        with contextlib.suppress(ValueError):
            changes.update(signal=signal.Signals(code - 128).name, exit_code=None)
    if usage is not None:
        changes.update(oom_killed=usage.oom_killed)
        if usage.cpu_time is not None:
            changes["cpu_time"] = usage.cpu_time
        if usage.memory_peak is not None:
            changes["memory_peak"] = usage.memory_peak
    return dataclasses.replace(outcome, **changes) if changes else outcome


def _with_parents(root: str, relative: str, include_last: bool = True) -> Iterator[str]:
    """``root/relative`` and each directory between it and ``root``."""
    parts = relative.split("/")
    for i in range(1, len(parts) + (1 if include_last else 0)):
        yield os.path.join(root, *parts[:i])
