"""Workspaces: where one execution's files live, written, read and removed by the runner that
owns them (a directory on this machine, one bound into a sandbox, a cloud sandbox's files API;
next a container's path or an SFTP directory).

The shared pipeline drives a workspace the same way everywhere: ``write`` the program and its
files, ``make_dir`` a working directory inside it before a stage, ``read`` the files asked
back after the run, and ``remove`` it at the end (once, also after a failure or cancellation).
"""

from __future__ import annotations

import abc
import tempfile
from collections.abc import Collection, Mapping, Sequence

from .._offload import off_loop, soon
from .._workspace import default_parent, make_dirs, read_files, remove_tree, write_files


class Workspace(abc.ABC):
    """One execution's directory, as its environment reaches it.

    :param path: the directory as the program sees it (absolute).
    """

    def __init__(self, path: str) -> None:
        self.path = path

    def uses(self, roots: Collection[str]) -> None:  # noqa: B027 (a hook; most need none)
        """The directories beyond the workspace (among its environment's ``file_roots``)
        this execution's files and fetched files are in; called before :meth:`write`. A
        workspace that provides them only on demand prepares them."""

    @abc.abstractmethod
    async def write(self, files: Mapping[str, bytes]) -> None:
        """Put path -> content into the workspace: relative paths, and absolute ones below
        the environment's ``file_roots`` (paths are checked already)."""

    @abc.abstractmethod
    async def make_dir(self, relative: str) -> None:
        """Make a directory inside the workspace (and its parents), for a working directory;
        a link or a file in the way is an error."""

    @abc.abstractmethod
    async def read(self, paths: Sequence[str]) -> dict[str, bytes]:
        """The files at ``paths`` (as for :meth:`write`) that exist and are regular files,
        as they are."""

    @abc.abstractmethod
    async def remove(self) -> None:
        """Remove the workspace with everything in it (again: nothing), to the end even
        when the task is cancelled (shielded, where it waits)."""


class HostWorkspace(Workspace):
    """A directory on this machine, reached through directory descriptors only (see
    :mod:`~run_environments._workspace`): links a program planted are never followed.

    :param host: the directory on this machine.
    :param path: where programs see it (default: ``host`` itself).
    :param owner: ``(uid, gid)`` that owns what is written (default: this process's).
    """

    def __init__(
        self, host: str, path: str | None = None, owner: tuple[int, int] | None = None
    ) -> None:
        super().__init__(path if path is not None else host)
        self.host = host
        self.owner = owner

    @classmethod
    def create(cls, parent: str | None = None) -> HostWorkspace:
        """A fresh directory only this process's user can enter, in ``parent`` (default: a
        memory-backed file system when there is one; see ``LocalRunEnvironment``)."""
        return cls(tempfile.mkdtemp(prefix="runenv-", dir=parent or default_parent()))

    async def write(self, files: Mapping[str, bytes]) -> None:
        await soon(write_files, self.host, files, self.owner)

    async def make_dir(self, relative: str) -> None:
        await soon(make_dirs, self.host, relative, self.owner)

    async def read(self, paths: Sequence[str]) -> dict[str, bytes]:
        return (await off_loop(read_files, self.host, paths)).files

    async def remove(self) -> None:
        await soon(remove_tree, self.host)
