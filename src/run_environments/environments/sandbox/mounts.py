"""Size-bounded memory file systems on the host, for places a memory cgroup cannot bound.

Without cgroups, nothing would limit what a program writes to its workspace (a host
directory); an E2B-style session keeps its files after its commands' cgroups are gone. As
root, each such place becomes a tmpfs of its own with a size and an inode count, so that a
program sees ``ENOSPC`` at its limit.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os

from ..._errors import EnvironmentUnavailableError

MS_NOSUID, MS_NODEV = 2, 4
MNT_DETACH = 2
BYTES_PER_INODE = 4096


def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)


def can_mount() -> bool:
    """Whether this process may mount file systems (it is root)."""
    return os.geteuid() == 0


def mount_tmpfs(path: str, size: int, owner: tuple[int, int] | None) -> None:
    """Mount a tmpfs of ``size`` bytes (and an inode per 4 KiB) on the directory ``path``,
    its root private to ``owner``.

    :raises EnvironmentUnavailableError: if the mount is refused.
    """
    inodes = max(1024, size // BYTES_PER_INODE)
    options = f"size={size},nr_inodes={inodes},mode=0700"
    if owner is not None:
        options += f",uid={owner[0]},gid={owner[1]}"
    result = _libc().mount(
        b"tmpfs", os.fsencode(path), b"tmpfs", MS_NOSUID | MS_NODEV, options.encode()
    )
    if result != 0:
        error = ctypes.get_errno()
        raise EnvironmentUnavailableError(
            f"cannot mount a bounded file system on {path}: {os.strerror(error)}"
        )


def unmount(path: str) -> None:
    """Detach the file system mounted on ``path`` (its files go with it)."""
    if _libc().umount2(os.fsencode(path), MNT_DETACH) != 0:
        error = ctypes.get_errno()
        raise OSError(error, os.strerror(error), path)
