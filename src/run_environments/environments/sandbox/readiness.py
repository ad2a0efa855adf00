"""Whether the sandbox can run here, and how it enforces limits, in words for
``runenv doctor`` and ``status()``."""

from __future__ import annotations

import os
from pathlib import Path

from ..._errors import EnvironmentUnavailableError
from . import mounts, seccomp
from .cgroups import Cgroups
from .identities import Identities


def static_problem(
    bwrap: str | None,
    network: bool,
    mount_workspaces: bool,
    identities: Identities | None,
) -> str | None:
    """Why the sandbox cannot run here before trying a run, or None (blocking: it reads the
    account database)."""
    if bwrap is None:
        return "bubblewrap is not installed (apt-get install bubblewrap)"
    if not os.access(bwrap, os.X_OK) or not os.path.isfile(bwrap):
        return f"bubblewrap {bwrap!r} is not an executable file"
    if not Path("/proc/self/ns/user").exists():
        return "this kernel has no user namespaces"
    try:
        seccomp.compile_filter(network)
    except EnvironmentUnavailableError as exc:
        return str(exc)
    if mount_workspaces and not mounts.can_mount():
        return (
            "without usable cgroup controllers the sandbox bounds workspaces with file "
            "systems of their own, and mounting them needs root: run as root or on a "
            "machine that delegates the cgroup memory and pids controllers"
        )
    if identities is not None and identities.taken():
        taken = ", ".join(identities.taken()[:3])
        return f"the sandbox identities {identities.ids} include accounts: {taken}"
    return None


def limits_note(cgroups: Cgroups | None) -> str:
    """How limits are enforced here."""
    if cgroups is None:
        return (
            "no cgroup memory and pids controllers in use: memory falls back to RLIMIT_DATA"
            " and processes to RLIMIT_NPROC (per execution: each has a uid of its own),"
            " and each workspace is a file system bounded by limits.disk"
        )
    return f"limits enforced with {cgroups.describe()}"
