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
import uuid
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import anyio

from ._errors import InvalidOptionsError
from ._models import check_relative_path

T = TypeVar("T")
DIRECTORY = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
MAX_OPEN_DEPTH = 32
"""Directories held open at once while removing a tree; deeper ones are moved up first."""


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


async def off_loop(function: Callable[..., T], *args: Any) -> T:
    """Run a blocking file operation in a worker thread, to its end even when cancelled."""
    with anyio.CancelScope(shield=True):
        result = await anyio.to_thread.run_sync(function, *args)
    return result


INLINE_OPERATIONS = 64
"""File operations (on a memory file system: microseconds each) done on the event loop
before the rest of the work goes to a worker thread."""


class OverBudget(Exception):
    """An operation met more entries than it may handle on the event loop."""


class Budget:
    """A count of file operations an inline call may still make."""

    def __init__(self, operations: int) -> None:
        self.left = operations

    def spend(self) -> None:
        self.left -= 1
        if self.left < 0:
            raise OverBudget


async def soon(function: Callable[..., T], *args: Any) -> T:
    """``function(*args, budget=...)`` on the event loop if it needs few operations (a small
    workspace, the usual case), else (again, from the start) in a worker thread. Functions
    taking a budget may be repeated: what they did before running out is not done twice."""
    try:
        return function(*args, budget=Budget(INLINE_OPERATIONS))
    except OverBudget:
        return await off_loop(function, *args)


@contextlib.asynccontextmanager
async def temporary_directory(parent: str | None = None) -> AsyncIterator[str]:
    """A fresh directory only we can enter, removed with everything in it afterwards."""
    path = tempfile.mkdtemp(prefix="runenv-", dir=parent or default_parent())
    try:
        yield path
    finally:
        await soon(remove_tree, path)


# -- walking beneath a directory ---------------------------------------------------------
@contextlib.contextmanager
def opened(path: str | int, flags: int = DIRECTORY) -> Iterator[int]:
    """A descriptor of ``path`` (our own directory, so the path is trusted), or a duplicate
    of the descriptor ``path``; closed afterwards."""
    fd = os.dup(path) if isinstance(path, int) else os.open(path, flags | os.O_CLOEXEC)
    try:
        yield fd
    finally:
        os.close(fd)


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


def make_dirs(root: str, relative: str, owner: tuple[int, int] | None = None) -> None:
    """Make ``root/relative`` and the directories above it, never through a link.

    :raises InvalidOptionsError: if a component is a file or a link.
    """
    with opened(root) as fd:
        try:
            os.close(open_beneath(fd, split(relative), create=True, owner=owner))
        except OSError as exc:
            raise InvalidOptionsError(f"cwd {describe(relative, exc)}") from None


def working_directory(root: str, cwd: str | None) -> str:
    """The directory a program runs in: ``root``, a relative ``cwd`` inside it, or ``cwd``."""
    if cwd is None:
        return root
    if os.path.isabs(cwd):
        if not os.path.isdir(cwd):
            raise InvalidOptionsError(f"cwd {cwd!r} is not a directory")
        return cwd
    make_dirs(root, cwd)
    return os.path.join(root, check_relative_path(cwd))


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


# -- removing ----------------------------------------------------------------------------
def remove_tree(path: str, attempts: int = 3, budget: Budget | None = None) -> None:
    """Remove ``path`` and everything below it, however deep or wide, without following a
    link, and where the program took permissions away inside it. Entries made meanwhile
    are removed too, up to ``attempts`` passes over a directory that keeps refilling.

    :raises OSError: if something could not be removed.
    """
    parent, name = os.path.split(os.path.normpath(path))
    try:
        with opened(parent or "/") as fd:
            remove_entry(fd, name, attempts, budget)
    except FileNotFoundError:
        return


def remove_entry(parent: int, name: str, attempts: int = 3, budget: Budget | None = None) -> None:
    """Remove the entry ``name`` of the directory ``parent`` (a whole tree if it is one)."""
    try:
        root = _open_dir(parent, name)
    except (NotADirectoryError, OSError) as exc:
        if exc.errno not in (errno.ENOTDIR, errno.ELOOP):
            raise
        _unlink(parent, name)
        return
    try:
        _empty(root, attempts, budget or Budget(1 << 62))
    finally:
        os.close(root)
    with contextlib.suppress(FileNotFoundError):
        os.rmdir(name, dir_fd=parent)


def _unlink(parent: int, name: str) -> bool:
    """Unlink a non-directory; False if ``name`` is a directory."""
    for _ in range(2):
        try:
            os.unlink(name, dir_fd=parent)
            return True
        except FileNotFoundError:
            return True
        except IsADirectoryError:
            return False
        except PermissionError:
            os.fchmod(parent, stat.S_IRWXU)  # the program made its directory read-only
    os.unlink(name, dir_fd=parent)
    return True


def _open_dir(parent: int, name: str) -> int:
    try:
        return os.open(name, DIRECTORY, dir_fd=parent)
    except PermissionError:  # not root, and the program took our permissions away
        path_fd = os.open(name, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=parent)
        try:
            if not stat.S_ISDIR(os.fstat(path_fd).st_mode):
                raise
            os.chmod(f"/proc/self/fd/{path_fd}", stat.S_IRWXU)
        finally:
            os.close(path_fd)
        return os.open(name, DIRECTORY, dir_fd=parent)


def _empty(root: int, attempts: int, budget: Budget) -> None:
    """Empty the directory ``root`` with a stack of at most :data:`MAX_OPEN_DEPTH`
    descriptors: a subtree found deeper is renamed into ``root`` and emptied from there."""
    stack: list[_Frame] = [_Frame(root, "", 0)]
    try:
        while stack:
            top = stack[-1]
            child = _clear_until_directory(
                top.fd, root, deep=len(stack) >= MAX_OPEN_DEPTH, budget=budget
            )
            if child is not None:
                stack.append(_Frame(_open_dir(top.fd, child), child, 0))
                continue
            stack.pop()
            if not stack:
                return
            os.close(top.fd)
            parent = stack[-1].fd
            try:
                os.rmdir(top.name, dir_fd=parent)
            except FileNotFoundError:
                pass
            except OSError as exc:  # refilled meanwhile: go through it again, a few times
                if exc.errno != errno.ENOTEMPTY or top.passes + 1 >= attempts:
                    raise
                stack.append(_Frame(_open_dir(parent, top.name), top.name, top.passes + 1))
    finally:
        for frame in stack[1:]:
            os.close(frame.fd)


@dataclass
class _Frame:
    fd: int
    name: str
    passes: int


def _clear_until_directory(fd: int, root: int, *, deep: bool, budget: Budget) -> str | None:
    """Remove the entries of ``fd`` that are not non-empty directories; return the first
    such directory (or None when ``fd`` is empty). At the depth bound, such directories are
    moved up into ``root`` instead."""
    with os.scandir(fd) as entries:
        for entry in entries:
            budget.spend()
            if _unlink(fd, entry.name):
                continue
            try:
                os.rmdir(entry.name, dir_fd=fd)
                continue
            except FileNotFoundError:
                continue
            except OSError as exc:
                if exc.errno not in (errno.ENOTEMPTY, errno.EEXIST, errno.EACCES, errno.EPERM):
                    raise
            if deep:
                os.rename(entry.name, f".runenv-{uuid.uuid4().hex}", src_dir_fd=fd, dst_dir_fd=root)
                continue
            return entry.name
    return None
