"""Executions' workspaces on the host: made in the environment's instance directory, written
at the first stage as the execution's identity, bounded by a file system of their own where
no cgroup bounds them, removed with everything in them, their identity then given back."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from ..._models import Limits
from ..._workspace import Budget, make_dirs, remove_tree, soon, write_files
from . import mounts
from .identities import Identities
from .instance import InstanceDirectory
from .outcomes import disk


@dataclass
class Execution:
    """One execution's workspace on the host, and the identity its stages run as."""

    host: str
    pending: dict[str, bytes] = dataclasses.field(default_factory=dict)
    user: tuple[int, int] | None = None
    mounted: bool = False


class Executions:
    """The workspaces of one environment's executions, by host path.

    :param mount: make each workspace a tmpfs of ``limits.disk`` (where no cgroup bounds it).
    """

    def __init__(self, home: InstanceDirectory, identities: Identities | None, mount: bool):
        self.home = home
        self.identities = identities
        self.mount = mount
        self._open: dict[str, Execution] = {}

    def open(self) -> Execution:
        execution = Execution(self.home.mkdtemp("ws-"))
        self._open[execution.host] = execution
        return execution

    def __getitem__(self, host: str) -> Execution:
        return self._open[host]

    def acquire(self) -> tuple[int, int] | None:
        """An identity for a run (None when not root: everything runs as our own user)."""
        return self.identities.acquire() if self.identities is not None else None

    def release(self, identity: tuple[int, int] | None) -> None:
        """Give an identity back once none of its processes and files are left."""
        if identity is not None and self.identities is not None:
            self.identities.release(identity)

    def prepare(
        self,
        execution: Execution,
        directory: str | None,
        limits: Limits,
        budget: Budget | None = None,
    ) -> None:
        """Write the pending files and make the working directory, as the execution's
        identity, through directory descriptors (a stage before may have planted links).
        Without cgroups, the workspace first becomes a file system of ``limits.disk``."""
        if self.mount and not execution.mounted:
            mounts.mount_tmpfs(execution.host, disk(limits), execution.user)
            execution.mounted = True
        write_files(execution.host, execution.pending, execution.user, budget)
        execution.pending = {}
        if directory is not None:
            make_dirs(execution.host, directory, execution.user)

    async def close(self, execution: Execution) -> None:
        """Remove an execution's workspace, then give its identity back."""
        if execution.mounted:
            mounts.unmount(execution.host)
        await soon(remove_tree, execution.host)
        self._open.pop(execution.host, None)
        self.release(execution.user)

    async def close_all(self) -> None:
        for execution in list(self._open.values()):
            await self.close(execution)

    def unmount_now(self) -> None:
        """Detach every workspace's file system (at interpreter exit)."""
        for execution in list(self._open.values()):
            if execution.mounted:
                mounts.unmount(execution.host)
                execution.mounted = False
