"""Private working directories on this machine's file system."""

from __future__ import annotations

import contextlib
import os
import shutil
import stat
import tempfile
from collections.abc import Iterator, Sequence

from ._errors import InvalidOptionsError
from ._models import check_relative_path


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


@contextlib.contextmanager
def temporary_directory(parent: str | None = None) -> Iterator[str]:
    """A fresh directory only we can enter, removed with everything in it afterwards."""
    path = tempfile.mkdtemp(prefix="runenv-", dir=parent or default_parent())
    try:
        yield path
    finally:
        remove_tree(path)


def remove_tree(path: str) -> None:
    """Remove ``path`` even where the program took away permissions inside it."""

    def retry(function: object, failed: str, exc_info: object) -> None:
        with contextlib.suppress(OSError):
            parent = os.path.dirname(failed)
            os.chmod(parent, stat.S_IRWXU)
            if os.path.isdir(failed) and not os.path.islink(failed):
                os.chmod(failed, stat.S_IRWXU)
                shutil.rmtree(failed, ignore_errors=True)
            else:
                os.unlink(failed)

    try:
        with os.scandir(path) as listing:
            entries = list(listing)
        if all(not entry.is_dir(follow_symlinks=False) for entry in entries):
            for entry in entries:  # the common case: a few files, no subdirectories
                os.unlink(entry.path)
            os.rmdir(path)
            return
    except FileNotFoundError:
        return
    except OSError:
        pass
    shutil.rmtree(path, onerror=retry)


def write_files(root: str, files: dict[str, bytes]) -> None:
    """Write relative path -> content under ``root``, never following a link."""
    for relative, content in files.items():
        target = os.path.join(root, check_relative_path(relative))
        os.makedirs(os.path.dirname(target), exist_ok=True)
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o644)
        with os.fdopen(fd, "wb") as fh:
            fh.write(content)


def working_directory(root: str, cwd: str | None) -> str:
    """The directory a program runs in: ``root``, a relative ``cwd`` inside it, or ``cwd``."""
    if cwd is None:
        return root
    if os.path.isabs(cwd):
        if not os.path.isdir(cwd):
            raise InvalidOptionsError(f"cwd {cwd!r} is not a directory")
        return cwd
    path = os.path.join(root, check_relative_path(cwd))
    os.makedirs(path, exist_ok=True)
    return path


FETCH_LIMIT = 16 << 20
"""The most read of one fetched file."""


def read_files(root: str, paths: Sequence[str], limit: int = FETCH_LIMIT) -> dict[str, bytes]:
    """Read regular files under ``root``, never following a link (the program may have made
    some); missing files, links and anything but regular files are left out."""
    found = {}
    for relative in paths:
        content = _read_beneath(root, check_relative_path(relative).split("/"), limit)
        if content is not None:
            found[relative] = content
    return found


def _read_beneath(root: str, parts: list[str], limit: int) -> bytes | None:
    opened = [os.open(root, os.O_RDONLY | os.O_DIRECTORY)]
    try:
        for part in parts[:-1]:
            flags = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW
            opened.append(os.open(part, flags, dir_fd=opened[-1]))
        flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK
        opened.append(os.open(parts[-1], flags, dir_fd=opened[-1]))
        if not stat.S_ISREG(os.fstat(opened[-1]).st_mode):
            return None
        with os.fdopen(os.dup(opened[-1]), "rb") as fh:
            return fh.read(limit)
    except OSError:
        return None
    finally:
        for fd in opened:
            os.close(fd)
