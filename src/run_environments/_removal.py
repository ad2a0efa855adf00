"""Removing a tree a program made: however deep or wide, never following a link, where the
program took permissions away, and with a bounded number of open descriptors."""

from __future__ import annotations

import contextlib
import errno
import os
import stat
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

from ._offload import Budget

DIRECTORY = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
MAX_OPEN_DEPTH = 32
"""Directories held open at once while removing a tree; deeper ones are moved up first."""


@contextlib.contextmanager
def opened(path: str | int, flags: int = DIRECTORY) -> Iterator[int]:
    """A descriptor of ``path`` (our own directory, so the path is trusted), or a duplicate
    of the descriptor ``path``; closed afterwards."""
    fd = os.dup(path) if isinstance(path, int) else os.open(path, flags | os.O_CLOEXEC)
    try:
        yield fd
    finally:
        os.close(fd)


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
