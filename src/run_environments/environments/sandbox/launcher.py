"""The sandboxes of one environment: launched into slots as an identity, in a cgroup, under
the seccomp filter, and disposed of with everything they held; also the long-lived ones of
the E2B-compatible service, which live in a directory kept between processes."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from dataclasses import dataclass

from ..._handles import ProcessHandle
from ..._models import Limits
from ..._workspace import off_loop, remove_tree, soon
from . import cgroups as _cgroups
from . import seccomp
from .instance import InstanceDirectory
from .launch import Sandbox, move_entries
from .outcomes import disk, limit_argv
from .pool import Shape
from .workspaces import Executions


@dataclass(frozen=True, kw_only=True)
class LongLived:
    """A long-lived process: ``argv`` as ``user`` in a sandbox whose ``workdir`` is the host
    directory ``home`` (kept between processes), with ``binds`` (host directory, path inside)
    as further writable directories.

    :param limits: over the environment's own (field by field).
    :param timeout: seconds for the sandbox to be set up.
    """

    argv: tuple[str, ...]
    home: str
    workdir: str
    binds: tuple[tuple[str, str], ...]
    cwd: str
    env: dict[str, str]
    user: tuple[int, int] | None
    limits: Limits = dataclasses.field(default_factory=Limits)
    timeout: float = 30


class Launcher:
    """Starts and disposes of one environment's sandboxes.

    :param static: bubblewrap's arguments common to every sandbox (probed once).
    :param prlimit: the ``prlimit`` program, for rlimits cgroups do not cover.
    """

    def __init__(
        self,
        *,
        home: InstanceDirectory,
        executions: Executions,
        keeper: _cgroups.Keeper,
        network: bool,
        prlimit: str | None,
        cgroups_in_use: bool,
    ) -> None:
        self.home = home
        self.executions = executions
        self.keeper = keeper
        self.network = network
        self.prlimit = prlimit
        self.cgroups_in_use = cgroups_in_use
        self.static: list[str] | None = None
        self.slots: set[str] = set()

    def _argv(self, limits: Limits, argv: tuple[str, ...] | list[str]) -> list[str]:
        return [*limit_argv(self.prlimit, limits, cgroups_in_use=self.cgroups_in_use), *argv]

    def _static(self) -> list[str]:
        assert self.static is not None, "the readiness check comes first"
        return self.static

    async def launch(
        self,
        shape: Shape,
        *,
        user: tuple[int, int] | None,
        staging: str | None,
        direct: bool = False,
        timeout: float,
        held: bool = False,
        binds: Sequence[tuple[str, str]] = (),
    ) -> Sandbox:
        """Start a sandbox for ``shape`` as ``user``; with ``staging``, its files go in first
        (so that a working directory among them exists when bubblewrap sets up), or with
        ``direct`` the staging directory itself is bound. With ``held``, the sandbox holds
        ``user`` and gives it back when it is disposed of. ``binds`` are further host
        directories, by where they appear (one at ``/tmp`` replaces the fresh one)."""
        if direct and staging is not None:
            slot = staging
        else:
            slot = self.home.mkdtemp("slot-")
            self.slots.add(slot)
            if user is not None:
                os.chown(slot, *user)
        sandbox = Sandbox(slot, None, user)
        sandbox.holds_identity = held
        back_to = None if direct else staging
        try:
            if back_to is not None:
                await soon(move_entries, back_to, slot)
            sandbox.cgroup = self.keeper.new(shape.limits)
            await sandbox.start(
                self._argv(shape.limits, shape.argv),
                static=self._static(),
                seccomp_filter=seccomp.compile_filter(self.network),
                tmp_size=None if any(t == "/tmp" for _, t in binds) else disk(shape.limits),
                shm_size=disk(shape.limits),
                cwd=shape.cwd,
                env=dict(shape.env),
                timeout=timeout,
                binds=binds,
            )
        except BaseException:
            await self.dispose(sandbox, back_to=back_to)
            raise
        return sandbox

    async def dispose(self, sandbox: Sandbox, *, back_to: str | None) -> _cgroups.Usage | None:
        """Stop ``sandbox`` if it still runs, return its files, remove its slot and cgroup,
        and give back the identity it still holds (one started ahead and never claimed)."""
        await stop(sandbox)
        usage = sandbox.cgroup.usage() if sandbox.cgroup is not None else None
        if sandbox.slot in self.slots:
            if back_to is not None:
                await soon(move_entries, sandbox.slot, back_to)
            await soon(remove_tree, sandbox.slot)
            self.slots.discard(sandbox.slot)
        if sandbox.cgroup is not None:
            await self.keeper.retire(sandbox.cgroup)
        if sandbox.holds_identity:
            self.executions.release(sandbox.user)
            sandbox.holds_identity = False
        return usage

    async def open_process(self, spec: LongLived) -> ProcessHandle:
        """Start ``spec`` and let it run; the handle drives it to its end and removes its
        cgroup."""
        sandbox = Sandbox(spec.home, self.keeper.new(spec.limits), spec.user)

        async def close() -> None:
            await stop(sandbox)
            if sandbox.cgroup is not None:
                await self.keeper.retire(sandbox.cgroup)

        try:
            await sandbox.start(
                self._argv(spec.limits, spec.argv),
                static=self._static(),
                seccomp_filter=seccomp.compile_filter(self.network),
                tmp_size=None,
                shm_size=disk(spec.limits),
                cwd=spec.cwd,
                env=spec.env,
                timeout=spec.timeout,
                workdir=spec.workdir,
                binds=spec.binds,
            )
        except BaseException:
            await close()
            raise
        sandbox.release()
        assert sandbox.started is not None
        return ProcessHandle(sandbox.started, close)

    async def close(self) -> None:
        """Remove every slot left (the sandboxes in them are gone)."""
        for path in list(self.slots):
            await off_loop(remove_tree, path)
        self.slots.clear()


async def stop(sandbox: Sandbox) -> None:
    """Stop, reap and close the sandbox's processes and descriptors (again: nothing)."""
    if sandbox.started is not None:
        await sandbox.started.abandon()
    sandbox.close_descriptors()
