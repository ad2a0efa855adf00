"""Private working directories on this machine's file system, handled through descriptors.

Untrusted code may have touched anything inside a workspace: a directory may have become a
symbolic link, a file a FIFO, a tree may be thousands of levels deep or hold millions of
entries. So every operation on a path inside a workspace walks it one component at a time
from an open directory descriptor, with ``O_NOFOLLOW`` (a link is never followed), opens
nothing that is not a regular file or a directory, and never recurses. These functions block:
environments call them in a worker thread.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from ._errors import InvalidOptionsError
from ._models import check_relative_path
from ._offload import Budget, OverBudget, off_loop, soon
from ._removal import DIRECTORY, MAX_OPEN_DEPTH, opened, remove_entry, remove_tree


def default_parent(shared: bool = False) -> str:
    """Where workspaces go: ``$RUNENV_TMPDIR``, else a memory-backed file system when one is
    writable (snippets are small, and creating and removing directories there is several
    times faster than on a disk), else the system's temp directory. With ``shared``, only a
    place that other users can reach (see :func:`reachable_by_others`)."""
    chosen = os.environ.get("RUNENV_TMPDIR")
    if chosen:
        return chosen
    for candidate in (os.environ.get("XDG_RUNTIME_DIR"), "/dev/shm", tempfile.gettempdir()):
        if candidate and os.path.isdir(candidate) and os.access(candidate, os.W_OK | os.X_OK):
            if not shared or reachable_by_others(candidate):
                return candidate
    return tempfile.gettempdir()


def reachable_by_others(path: str) -> bool:
    """Whether every directory from ``/`` down to ``path`` lets other users pass through."""
    current = os.path.realpath(path)
    while True:
        try:
            if not os.stat(current).st_mode & stat.S_IXOTH:
                return False
        except OSError:
            return False
        if current == "/":
            return True
        current = os.path.dirname(current)


# -- walking beneath a directory ---------------------------------------------------------
def open_beneath(
    root: int, parts: Sequence[str], *, create: bool = False, owner: tuple[int, int] | None = None
) -> int:
    """Open the directory ``root/parts...`` without following any link; with ``create``,
    make missing directories (given to ``owner``). The caller closes the result (a new
    descriptor, also for no ``parts``).

    :raises OSError: ELOOP or ENOTDIR where a component is a link or not a directory.
    """
    fd = os.dup(root)
    try:
        for part in parts:
            child = _open_or_make(fd, part, create, owner)
            os.close(fd)
            fd = child
    except BaseException:
        os.close(fd)
        raise
    return fd


def _open_or_make(parent: int, name: str, create: bool, owner: tuple[int, int] | None) -> int:
    try:
        return os.open(name, DIRECTORY, dir_fd=parent)
    except FileNotFoundError:
        if not create:
            raise
    with contextlib.suppress(FileExistsError):  # made meanwhile: opened below all the same
        os.mkdir(name, 0o755, dir_fd=parent)
    fd = os.open(name, DIRECTORY, dir_fd=parent)
    if owner is not None:
        os.fchown(fd, *owner)
    return fd


def split(relative: str) -> list[str]:
    """The components of a checked relative path."""
    return check_relative_path(relative).split("/")


def describe(path: str, exc: OSError) -> str:
    """Why an operation on the workspace path ``path`` failed, in words."""
    reasons = {
        errno.ELOOP: "it is a symbolic link",
        errno.ENOTDIR: "a component is a symbolic link or not a directory",
        errno.EISDIR: "it is a directory",
        errno.ENXIO: "it is not a regular file",
        errno.ENOENT: "no such file or directory",
        errno.EEXIST: "it already exists",
        errno.ENOSPC: "no space left",
    }
    return f"{path!r}: {reasons.get(exc.errno or 0, exc.strerror or str(exc))}"


def open_regular(parent: int, name: str, flags: int, mode: int = 0o644) -> int:
    """Open ``name`` in ``parent`` only if it is a regular file (never blocking on a FIFO,
    never following a link); the descriptor is blocking again afterwards.

    :raises OSError: ENXIO if it is anything but a regular file.
    """
    fd = os.open(name, flags | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, mode, dir_fd=parent)
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise OSError(errno.ENXIO, "not a regular file")
    return fd  # O_NONBLOCK does nothing to a regular file


# -- writing and reading -----------------------------------------------------------------
def check_tree(paths: Iterable[str]) -> None:
    """Refuse a set of file paths where one would have to be a file and a directory."""
    files = set(paths)
    for path in files:
        parts = path.split("/")
        for i in range(1, len(parts)):
            if "/".join(parts[:i]) in files:
                raise InvalidOptionsError(
                    f"file {path!r} would be inside {'/'.join(parts[:i])!r}, which is a file"
                )


def write_file(root: int, relative: str, data: bytes, owner: tuple[int, int] | None) -> None:
    """Write ``data`` to ``root/relative``, making its directories (see module docstring)."""
    *parents, name = split(relative)
    parent = open_beneath(root, parents, create=True, owner=owner) if parents else root
    try:
        fd = open_regular(parent, name, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    finally:
        if parent != root:
            os.close(parent)
    with os.fdopen(fd, "wb") as fh:
        if owner is not None:
            os.fchown(fd, *owner)
        fh.write(data)


def write_files(
    root: str,
    files: Mapping[str, bytes],
    owner: tuple[int, int] | None = None,
    budget: Budget | None = None,
) -> None:
    """Write relative path -> content under ``root``.

    :raises InvalidOptionsError: where a path cannot be written (a component is a file or a
        link, the file is a FIFO...).
    """
    check_tree(files)
    with opened(root) as fd:
        for relative, content in files.items():
            if budget is not None:
                for _ in range(1 + len(content) // (64 << 10)):  # a 64 KiB copy is an operation
                    budget.spend()
            try:
                write_file(fd, relative, content, owner)
            except OSError as exc:
                raise InvalidOptionsError(f"cannot write file {describe(relative, exc)}") from None


def make_dirs(
    root: str,
    relative: str,
    owner: tuple[int, int] | None = None,
    budget: Budget | None = None,
) -> None:
    """Make ``root/relative`` and the directories above it, never through a link.

    :raises InvalidOptionsError: if a component is a file or a link.
    """
    parts = split(relative)
    if budget is not None:
        for _ in parts:
            budget.spend()
    with opened(root) as fd:
        try:
            os.close(open_beneath(fd, parts, create=True, owner=owner))
        except OSError as exc:
            raise InvalidOptionsError(f"cwd {describe(relative, exc)}") from None


FETCH_LIMIT = 16 << 20
"""The most read of one fetched file."""
FETCH_TOTAL = 32 << 20
"""The most read of all fetched files of one run together."""


@dataclass(frozen=True)
class Fetched:
    """Files read back from a workspace, and the paths that could not be."""

    files: dict[str, bytes]
    missing: tuple[str, ...]


def read_files(
    root: str, paths: Sequence[str], limit: int = FETCH_LIMIT, total: int = FETCH_TOTAL
) -> Fetched:
    """Read regular files under ``root``. Missing files, links, anything but regular files
    and files past the ``total`` bound are ``missing``; a file is cut at ``limit`` bytes, and
    files that are the same inode (hard links) are read once."""
    found: dict[str, bytes] = {}
    missing: list[str] = []
    seen: dict[tuple[int, int], bytes] = {}
    budget = total
    with opened(root) as fd:
        for relative in dict.fromkeys(paths):
            content = _read_beneath(fd, split(relative), limit, seen)
            if content is None or len(content) > budget:
                missing.append(relative)
                continue
            found[relative] = content
            budget -= len(content)
    return Fetched(found, tuple(missing))


def _read_beneath(
    root: int, parts: list[str], limit: int, seen: dict[tuple[int, int], bytes]
) -> bytes | None:
    try:
        parent = open_beneath(root, parts[:-1])
        try:
            fd = open_regular(parent, parts[-1], os.O_RDONLY)
        finally:
            os.close(parent)
    except OSError:
        return None
    with os.fdopen(fd, "rb") as fh:
        info = os.fstat(fd)
        key = (info.st_dev, info.st_ino)
        if key not in seen:
            seen[key] = fh.read(limit)
        return seen[key]


__all__ = [  # with what the removal and off-loop modules provide, for one import place
    "DIRECTORY", "FETCH_LIMIT", "FETCH_TOTAL", "MAX_OPEN_DEPTH", "Budget", "Fetched",
    "OverBudget", "check_tree", "default_parent", "describe", "make_dirs", "off_loop",
    "open_beneath", "open_regular", "opened", "reachable_by_others", "read_files",
    "remove_entry", "remove_tree", "soon", "split",
    "write_file", "write_files",
]  # fmt: skip
