"""Host identities for sandboxes: each execution runs as a uid and gid of its own.

Kernel quotas that are per user (inotify instances, processes under ``RLIMIT_NPROC``,
message-queue bytes, user namespaces) and everything a host daemon grants by uid are then
never shared between two runs, nor with ``nobody``. The default range lies above the ranges
that user namespaces and container managers hand out and below 2^31, and no account of
this machine may be in it.
"""

from __future__ import annotations

import contextlib
import fcntl
import grp
import os
import pwd
import random

from ..._errors import EnvironmentUnavailableError, InvalidOptionsError

DEFAULT_RANGE = range(0x70000000, 0x70000000 + 65536)


LOCKS = "/run/runenv/identities"
"""Where identities are claimed, machine-wide: one lock file per uid, locked while held."""


class Identities:
    """A pool of (uid, gid) pairs from ``ids``, each held by at most one execution on this
    machine: a claim is an ``flock`` on a file of :data:`LOCKS`, shared by every process
    that uses the sandbox, and the kernel drops it when its holder dies."""

    def __init__(self, ids: range = DEFAULT_RANGE, locks: str = LOCKS) -> None:
        if not ids or ids.start < 1000 or ids.stop > 1 << 31 or ids.step != 1:
            raise InvalidOptionsError(f"sandbox identities {ids} must be a range within 1000..2^31")
        self.ids = ids
        self.locks = locks
        self._held: dict[int, int] = {}  # uid -> the descriptor holding its lock
        self._next = random.randrange(len(ids))  # processes start apart: fewer collisions
        self.used: set[int] = set()

    def taken(self) -> list[str]:
        """Accounts or groups of this machine inside the range (there should be none)."""
        with contextlib.suppress(OSError):
            users = [f"user {u.pw_name}" for u in pwd.getpwall() if u.pw_uid in self.ids]
            groups = [f"group {g.gr_name}" for g in grp.getgrall() if g.gr_gid in self.ids]
            return users + groups
        return []

    def acquire(self) -> tuple[int, int]:
        """An identity no other execution on this machine holds.

        :raises EnvironmentUnavailableError: if every identity of the range is held.
        """
        directory = self._directory()
        try:
            for _ in range(len(self.ids)):
                uid = self.ids[self._next]
                self._next = (self._next + 1) % len(self.ids)
                if uid not in self._held and self._claim(directory, uid):
                    self.used.add(uid)
                    return uid, uid
        finally:
            os.close(directory)
        raise EnvironmentUnavailableError(
            f"all {len(self.ids)} sandbox identities are in use; wait for executions to end"
        )

    def _directory(self) -> int:
        try:
            os.makedirs(self.locks, mode=0o700, exist_ok=True)
            return os.open(self.locks, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
        except OSError as exc:
            raise EnvironmentUnavailableError(
                f"cannot claim sandbox identities in {self.locks}: {exc.strerror}"
            ) from exc

    def _claim(self, directory: int, uid: int) -> bool:
        fd = os.open(str(uid), os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600,
                     dir_fd=directory)  # fmt: skip
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        self._held[uid] = fd
        return True

    def release(self, identity: tuple[int, int]) -> None:
        """Give ``identity`` back once nothing of its execution is left (processes, files)."""
        fd = self._held.pop(identity[0], None)
        if fd is not None:
            os.close(fd)  # closing the only descriptor drops the lock
