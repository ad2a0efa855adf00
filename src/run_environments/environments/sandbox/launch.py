"""Starting one sandbox: bubblewrap, set up and held at its ``--block-fd`` until released.

A sandbox runs in a *slot*: a host directory bound at ``/workspace``. The run's files are
moved into the slot just before release and back out after the run, so a sandbox can be
set up before its files exist (see ``SandboxRunEnvironment(prestart=...)``).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
from collections.abc import Sequence
from pathlib import Path

import anyio

from ..._errors import EnvironmentUnavailableError
from ..._process import Spawn, Started, start_process
from ..._workspace import Budget, opened
from . import bwrap as bubblewrap
from . import cgroups


class Sandbox:
    """One sandbox, from spawn to removal; used for exactly one run."""

    def __init__(
        self, slot: str, cgroup: cgroups.RunCgroup | None, user: tuple[int, int] | None = None
    ) -> None:
        self.slot = slot
        self.cgroup = cgroup
        self.user = user
        self.holds_identity = False  # give ``user`` back when the sandbox is disposed of
        self.init_pid: int | None = None
        self.started: Started | None = None
        self._ours: list[int] = []  # descriptors we keep
        self._theirs: list[int] = []  # passed to bubblewrap, closed once it has them
        self._block: int | None = None

    # -- descriptors ----------------------------------------------------------------------
    def _give(self, fd: int) -> int:
        self._theirs.append(fd)
        return fd

    def _keep(self, fd: int) -> int:
        self._ours.append(fd)
        return fd

    def _close_theirs(self) -> None:
        while self._theirs:
            os.close(self._theirs.pop())

    def close_descriptors(self) -> None:
        self._close_theirs()
        while self._ours:
            os.close(self._ours.pop())

    # -- life -----------------------------------------------------------------------------
    async def start(
        self,
        command: Sequence[str],
        *,
        static: Sequence[str],
        seccomp_filter: bytes,
        tmp_size: int | None,
        shm_size: int,
        cwd: str,
        env: dict[str, str],
        timeout: float,
        workdir: str = bubblewrap.WORKDIR,
        binds: Sequence[tuple[str, str]] = (),
    ) -> None:
        """Spawn bubblewrap and wait until its sandbox is set up and in its cgroup."""
        info_read, info_write = os.pipe()
        self._keep(info_read)
        self._give(info_write)
        block_read, block_write = os.pipe()
        self._give(block_read)
        self._block = self._keep(block_write)
        fds = bubblewrap.Fds(
            seccomp=self._give(bubblewrap.data_fd(seccomp_filter)),
            passwd=self._give(bubblewrap.data_fd(bubblewrap.PASSWD.encode())),
            group=self._give(bubblewrap.data_fd(bubblewrap.GROUP.encode())),
            info=info_write,
            block=block_read,
        )
        argv = [
            *static,
            *bubblewrap.run_arguments(
                fds=fds,
                workspace=self.slot,
                tmp_size=tmp_size,
                shm_size=shm_size,
                cwd=cwd,
                env=env,
                workdir=workdir,
                binds=binds,
            ),
            *command,
        ]

        async def prepare(pid: int) -> None:
            self._close_theirs()
            info = await _read_to_end(info_read)
            if not info:
                return  # bubblewrap failed before it made the sandbox; its status says why
            self.init_pid = json.loads(info)["child-pid"]
            if self.cgroup is not None:
                with contextlib.suppress(ProcessLookupError):  # it died in its set-up
                    self.cgroup.attach(self.init_pid)

        try:
            self.started = await start_process(
                argv,
                cwd=self.slot,
                env={},
                stdin=True,
                timeout=timeout,
                spawn=Spawn(
                    pass_fds=tuple(self._theirs),
                    user=self.user[0] if self.user else None,
                    group=self.user[1] if self.user else None,
                    prepare=prepare,
                    signal=self.signal,
                ),
            )
        except TimeoutError:
            raise EnvironmentUnavailableError(
                f"the sandbox was not set up within {timeout:g} s"
            ) from None

    def release(self) -> None:
        """Let the held sandbox go on to run its command."""
        if self._block is not None:
            self._ours.remove(self._block)
            os.close(self._block)
            self._block = None

    @property
    def made(self) -> bool:
        """Whether bubblewrap got as far as making the sandbox."""
        return self.init_pid is not None

    def signal(self, pid: int, sig: int) -> None:
        """Deliver ``sig`` to the sandboxed processes, not to bubblewrap's monitor: the
        monitor dies on SIGTERM and would take the program down with no grace."""
        if self.cgroup is not None:
            if sig == signal.SIGKILL:
                self.cgroup.kill()
            else:
                _signal_all(_members(self.cgroup), sig)
        elif self.init_pid is not None and sig != signal.SIGKILL:
            _signal_all(_children(self.init_pid), sig)
        if sig == signal.SIGKILL:
            if self.init_pid is not None:  # the namespace dies with its init
                _signal_all([self.init_pid], signal.SIGKILL)
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGKILL)


def _signal_all(pids: list[int], sig: int) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, sig)


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


def move_entries(source: str, target: str, budget: Budget | None = None) -> None:
    """Move everything in ``source`` into ``target`` (one file system: renames of the
    entries themselves, which never follow a link); see :func:`~.._workspace.soon`."""
    with opened(source) as src, opened(target) as dst, os.scandir(src) as entries:
        for entry in entries:
            if budget is not None:
                budget.spend()
            os.rename(entry.name, entry.name, src_dir_fd=src, dst_dir_fd=dst)
