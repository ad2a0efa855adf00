"""The host directory of one sandbox environment, and the sweep of those of dead owners.

Everything an environment makes on the host (workspaces, slots, E2B sessions) lives in one
directory, ``runenv-<instance>`` under its ``tmp_dir``, with a lock file its process holds
(``flock``). A process that dies, even by SIGKILL, drops the lock; the next environment to
start there finds the directory unlocked and removes it, the file systems mounted in it and
the cgroups named after the instance. (Its processes died with it: bubblewrap runs with
``--die-with-parent`` and each sandbox's PID namespace dies with its init.)
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import tempfile
import uuid

from ..._workspace import remove_tree
from . import cgroups as _cgroups
from . import mounts

LOCK = "owner.lock"
NAME = re.compile(r"runenv-([0-9a-f]{12})")


class InstanceDirectory:
    """``tmp_dir/runenv-<instance>``, made and locked on first use, removed by :meth:`close`."""

    def __init__(self, tmp_dir: str, instance: str) -> None:
        self.tmp_dir = tmp_dir
        self.instance = instance
        self.path = os.path.join(tmp_dir, f"runenv-{instance}")
        self._lock: int | None = None

    def get(self) -> str:
        """The directory, made (and locked) if it is not there yet."""
        if self._lock is None:
            # Made under another name and renamed once locked: a sweep never sees it unlocked.
            staging = tempfile.mkdtemp(prefix=f".runenv-{self.instance}-", dir=self.tmp_dir)
            os.chmod(staging, 0o711)  # the sandboxes' uids pass through to their own slots
            lock = os.open(
                os.path.join(staging, LOCK), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600
            )
            fcntl.flock(lock, fcntl.LOCK_EX)
            os.rename(staging, self.path)
            self._lock = lock
        return self.path

    def mkdtemp(self, prefix: str) -> str:
        """A new private directory inside."""
        return tempfile.mkdtemp(prefix=prefix, dir=self.get())

    def close(self) -> None:
        """Remove the directory (its contents are gone already) and drop the lock."""
        if self._lock is not None:
            remove_tree(self.path)
            os.close(self._lock)
            self._lock = None


def new_instance() -> str:
    return uuid.uuid4().hex[:12]


def sweep(tmp_dir: str, cgroups: _cgroups.Cgroups | None) -> list[str]:
    """Remove what environments that died left in ``tmp_dir``; returns what was removed.
    Blocking: for a worker thread."""
    removed = []
    with contextlib.suppress(FileNotFoundError):
        for entry in os.scandir(tmp_dir):
            found = NAME.fullmatch(entry.name)
            if found is None or not entry.is_dir(follow_symlinks=False):
                continue
            if _sweep_one(entry.path, found.group(1), cgroups):
                removed.append(entry.path)
    return removed


def _sweep_one(path: str, instance: str, cgroups: _cgroups.Cgroups | None) -> bool:
    try:
        lock = os.open(os.path.join(path, LOCK), os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return False  # not an instance directory (or being removed by its owner)
    try:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False  # its owner lives
        for point in mounted_beneath(path):
            with contextlib.suppress(OSError):
                mounts.unmount(point)
        if cgroups is not None:
            for cgroup in cgroups.leftovers(f"{_cgroups.PREFIX}{instance}-"):
                cgroup.kill()
                cgroup.remove()
        remove_tree(path)
        return True
    finally:
        os.close(lock)


def mounted_beneath(path: str) -> list[str]:
    """Mount points below ``path``, deepest first."""
    points = []
    with open("/proc/self/mountinfo") as mountinfo:
        for line in mountinfo:
            point = line.split()[4].encode().decode("unicode_escape")
            if point.startswith(path + "/"):
                points.append(point)
    return sorted(points, key=len, reverse=True)
