"""Private working directories on this machine's file system."""

from __future__ import annotations

import contextlib
import os
import shutil
import stat
import tempfile
from collections.abc import Iterator

from ._errors import InvalidOptionsError
from ._models import check_relative_path


@contextlib.contextmanager
def temporary_directory(parent: str | None = None) -> Iterator[str]:
    """A fresh directory only we can enter, removed with everything in it afterwards."""
    path = tempfile.mkdtemp(prefix="runenv-", dir=parent)
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

    if os.path.lexists(path):
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
