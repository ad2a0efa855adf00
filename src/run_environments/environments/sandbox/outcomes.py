"""Limits as the sandbox sets them (rlimits through ``prlimit``), and what a run's outcome
means once bubblewrap and the cgroup have had their say."""

from __future__ import annotations

import dataclasses
import resource
from typing import Any

from ..._errors import InvalidOptionsError
from ..._models import Limits
from ..._process import Outcome
from ..._signals import signal_of
from ..command import Command, rlimit_options
from . import cgroups

DEFAULT_LIMITS = Limits(
    memory=512 << 20, processes=256, disk=256 << 20, open_files=1024, cpu_time=None
)
"""Limits of every run unless the environment or the execution says otherwise."""


def disk(limits: Limits) -> int:
    """Bytes of each writable place."""
    return limits.disk or DEFAULT_LIMITS.disk or 0


def limit_argv(prlimit: str | None, limits: Limits, cgroups_in_use: bool) -> list[str]:
    """``prlimit`` arguments that set the rlimits inside the sandbox just before the program
    starts (memory and processes too, where no cgroup bounds them)."""
    if prlimit is None:
        return []
    options = rlimit_options(
        limits, memory=None if cgroups_in_use else "--data", processes=not cgroups_in_use
    )
    return [prlimit, *options, "--"] if options else []


def enforceable(limits: Limits) -> Limits:
    """``limits``, if this process can set them (an rlimit is never raised above its hard
    limit).

    :raises InvalidOptionsError: naming the limit and the most it may be here.
    """
    for name, which in (("open_files", resource.RLIMIT_NOFILE), ("disk", resource.RLIMIT_FSIZE)):
        value = getattr(limits, name)
        hard = resource.getrlimit(which)[1]
        if value is not None and hard != resource.RLIM_INFINITY and value > hard:
            raise InvalidOptionsError(f"limits.{name} may be at most {hard} here, not {value}")
    return limits


def too_late(command: Command) -> Outcome:
    """The outcome of a command whose deadline passed before its program could start."""
    return Outcome(exit_code=None, signal=None, timed_out=True, stdout=b"", stderr=b"",
                   stdout_truncated=False, stderr_truncated=False,
                   duration=command.timeout)  # fmt: skip


def translate(outcome: Outcome, usage: cgroups.Usage | None) -> Outcome:
    """bubblewrap reports a program killed by signal N as exit status 128+N; the cgroup
    measured CPU time, peak memory and whether it ran out of memory."""
    changes: dict[str, Any] = {}
    killed = signal_of(outcome.exit_code) if outcome.exit_code is not None else None
    if outcome.signal is None and killed is not None:
        changes.update(signal=killed.name, exit_code=None)
    if usage is not None:
        changes.update(oom_killed=usage.oom_killed)
        if usage.cpu_time is not None:
            changes["cpu_time"] = usage.cpu_time
        if usage.memory_peak is not None:
            changes["memory_peak"] = usage.memory_peak
    return dataclasses.replace(outcome, **changes) if changes else outcome
