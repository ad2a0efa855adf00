"""Executions' workspaces on the host: made in the environment's instance directory, written
at the first stage as the execution's identity, bounded by a file system of their own where
no cgroup bounds them, removed with everything in them, their identity then given back."""

from __future__ import annotations

import os
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field

from ..._models import Limits
from ..._workspace import Budget, make_dirs, off_loop, read_files, remove_tree, soon, write_files
from ..workspace import Workspace
from . import bwrap as bubblewrap
from . import mounts
from .identities import Identities
from .instance import InstanceDirectory
from .outcomes import disk


@dataclass
class Area:
    """A host directory of an execution's own bound at ``target`` (``/tmp``, ``/mnt``) in
    its sandboxes, for files it names there; written at the first stage, as for the
    workspace."""

    target: str
    host: str
    pending: dict[str, bytes] = field(default_factory=dict)
    mounted: bool = False


class Execution(Workspace):
    """One execution's workspace: a host directory bound into its sandboxes at
    ``/workspace``, and the areas its files name beyond it. What is written and made waits
    for the first stage, which decides the identity the files belong to (a sandbox started
    ahead comes with its own)."""

    def __init__(self, owner: Executions, host: str) -> None:
        super().__init__(bubblewrap.WORKDIR)
        self.host = host
        self.pending: dict[str, bytes] = {}
        self.directories: list[str] = []
        self.areas: dict[str, Area] = {}
        self.user: tuple[int, int] | None = None
        self.lent = False
        """Whether ``user`` is a warm server's, lent for one run (it keeps it)."""
        self.mounted = False
        self._owner = owner

    def uses(self, roots: Collection[str]) -> None:
        for root in roots:
            if root not in self.areas:
                self.areas[root] = Area(root, self._owner.home.mkdtemp("area-"))

    def binds(self) -> list[tuple[str, str]]:
        """(host directory, sandbox directory) of the areas, for bubblewrap."""
        return [(area.host, area.target) for area in self.areas.values()]

    def _area(self, path: str) -> tuple[Area | None, str]:
        for area in self.areas.values():
            if path.startswith(area.target + "/"):
                return area, path[len(area.target) + 1 :]
        return None, path

    async def write(self, files: Mapping[str, bytes]) -> None:
        for path, content in files.items():
            area, relative = self._area(path)
            (area.pending if area is not None else self.pending)[relative] = content

    async def make_dir(self, relative: str) -> None:
        self.directories.append(relative)

    async def read(self, paths: Sequence[str]) -> dict[str, bytes]:
        return await off_loop(self._read, paths)

    def _read(self, paths: Sequence[str]) -> dict[str, bytes]:
        by_place: dict[str, dict[str, str]] = {}
        for path in paths:
            area, relative = self._area(path)
            by_place.setdefault(area.host if area else self.host, {})[relative] = path
        found: dict[str, bytes] = {}
        for host, wanted in by_place.items():
            for relative, content in read_files(host, list(wanted)).files.items():
                found[wanted[relative]] = content
        return found

    async def remove(self) -> None:
        await self._owner.close(self)

    def unmount(self) -> None:
        """Detach the file systems mounted on the workspace and its areas (again: nothing)."""
        places: list[Execution | Area] = [self, *self.areas.values()]
        for place in places:
            if place.mounted:
                mounts.unmount(place.host)
                place.mounted = False


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
        execution = Execution(self, self.home.mkdtemp("ws-"))
        self._open[execution.host] = execution
        return execution

    def acquire(self) -> tuple[int, int] | None:
        """An identity for a run (None when not root: everything runs as our own user)."""
        return self.identities.acquire() if self.identities is not None else None

    def release(self, identity: tuple[int, int] | None) -> None:
        """Give an identity back once none of its processes and files are left."""
        if identity is not None and self.identities is not None:
            self.identities.release(identity)

    def prepare(self, execution: Execution, limits: Limits, budget: Budget | None = None) -> None:
        """Write the pending files and make the pending directories, as the execution's
        identity, through directory descriptors (a stage before may have planted links).
        Without cgroups, the workspace first becomes a file system of ``limits.disk``."""
        if self.mount and not execution.mounted:
            mounts.mount_tmpfs(execution.host, disk(limits), execution.user)
            execution.mounted = True
        write_files(execution.host, execution.pending, execution.user, budget)
        execution.pending = {}
        for area in execution.areas.values():
            if self.mount and not area.mounted:
                mounts.mount_tmpfs(area.host, disk(limits), execution.user)
                area.mounted = True
            elif execution.user is not None:
                os.chown(area.host, *execution.user)
            write_files(area.host, area.pending, execution.user, budget)
            area.pending = {}
        while execution.directories:
            make_dirs(execution.host, execution.directories[0], execution.user, budget)
            execution.directories.pop(0)

    async def close(self, execution: Execution) -> None:
        """Remove an execution's workspace, then give its identity back (again: nothing)."""
        if execution.host not in self._open:
            return
        execution.unmount()
        for area in execution.areas.values():
            await soon(remove_tree, area.host)
        await soon(remove_tree, execution.host)
        if self._open.pop(execution.host, None) is not None and not execution.lent:
            self.release(execution.user)

    async def close_all(self) -> None:
        for execution in list(self._open.values()):
            await self.close(execution)

    def unmount_now(self) -> None:
        """Detach every workspace's file system (at interpreter exit)."""
        for execution in list(self._open.values()):
            execution.unmount()
