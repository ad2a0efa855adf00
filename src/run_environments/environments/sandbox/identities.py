"""Host identities for sandboxes: each execution runs as a uid and gid of its own.

Kernel quotas that are per user (inotify instances, processes under ``RLIMIT_NPROC``,
message-queue bytes, user namespaces) and everything a host daemon grants by uid are then
never shared between two runs, nor with ``nobody``. The default range lies above the ranges
that user namespaces and container managers hand out and below 2^31, and no account of
this machine may be in it.
"""

from __future__ import annotations

import contextlib
import grp
import pwd

from ..._errors import EnvironmentUnavailableError, InvalidOptionsError

DEFAULT_RANGE = range(0x70000000, 0x70000000 + 65536)


class Identities:
    """A pool of (uid, gid) pairs from ``ids``, each held by at most one execution."""

    def __init__(self, ids: range = DEFAULT_RANGE) -> None:
        if not ids or ids.start < 1000 or ids.stop > 1 << 31 or ids.step != 1:
            raise InvalidOptionsError(f"sandbox identities {ids} must be a range within 1000..2^31")
        self.ids = ids
        self._free = list(reversed(ids))
        self._held: set[int] = set()
        self._checked = False

    def taken(self) -> list[str]:
        """Accounts or groups of this machine inside the range (there should be none)."""
        with contextlib.suppress(OSError):
            users = [f"user {u.pw_name}" for u in pwd.getpwall() if u.pw_uid in self.ids]
            groups = [f"group {g.gr_name}" for g in grp.getgrall() if g.gr_gid in self.ids]
            return users + groups
        return []

    def acquire(self) -> tuple[int, int]:
        """An identity no other execution holds.

        :raises EnvironmentUnavailableError: if every identity of the range is held.
        """
        if not self._free:
            raise EnvironmentUnavailableError(
                f"all {len(self.ids)} sandbox identities are in use; "
                "wait for running executions to end"
            )
        uid = self._free.pop()
        self._held.add(uid)
        return uid, uid

    def release(self, identity: tuple[int, int]) -> None:
        """Give ``identity`` back once nothing of its execution is left (processes, files)."""
        uid = identity[0]
        if uid in self._held:
            self._held.remove(uid)
            self._free.append(uid)

    def __len__(self) -> int:
        """How many identities are held."""
        return len(self._held)
