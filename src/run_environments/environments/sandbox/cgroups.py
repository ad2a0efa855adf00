"""One cgroup per execution: a memory limit, a process limit, and measured usage.

Works on cgroup v2 (the unified hierarchy most systems run) and on v1 (separate memory, pids
and cpuacct hierarchies). :func:`detect` picks what this machine offers; where neither is
usable the sandbox falls back to rlimits and ``runenv doctor`` says so.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import anyio

from ..._errors import EnvironmentUnavailableError
from ..._models import Limits

PREFIX = "runenv-"


@dataclass(frozen=True)
class Usage:
    """What a cgroup measured."""

    cpu_time: float | None = None
    memory_peak: int | None = None
    oom_killed: bool = False


def _read(path: Path) -> str | None:
    try:
        return path.read_text()
    except OSError:
        return None


def _keyed(text: str | None, key: str) -> int | None:
    for line in (text or "").splitlines():
        name, _, value = line.partition(" ")
        if name == key and value.strip().isdigit():
            return int(value)
    return None


def _kill_members(procs: Path) -> int:
    killed = 0
    for pid in (_read(procs) or "").split():
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(int(pid), signal.SIGKILL)
            killed += 1
    return killed


class RunCgroup:
    """The cgroup (on v1: the cgroups, one per hierarchy) of one execution."""

    def __init__(self, directories: list[Path], version: int) -> None:
        self.directories = directories
        self.version = version

    def attach(self, pid: int) -> None:
        for directory in self.directories:
            (directory / "cgroup.procs").write_text(str(pid))

    def usage(self) -> Usage:
        if self.version == 2:
            d = self.directories[0]
            usec = _keyed(_read(d / "cpu.stat"), "usage_usec")
            peak = _read(d / "memory.peak")
            oom = _keyed(_read(d / "memory.events"), "oom_kill")
            return Usage(
                cpu_time=None if usec is None else usec / 1e6,
                memory_peak=int(peak) if peak and peak.strip().isdigit() else None,
                oom_killed=bool(oom),
            )
        cpu = peak = oom = None
        for d in self.directories:
            cpu = cpu if cpu is not None else _read(d / "cpuacct.usage")
            peak = peak if peak is not None else _read(d / "memory.max_usage_in_bytes")
            oom = oom if oom is not None else _keyed(_read(d / "memory.oom_control"), "oom_kill")
        return Usage(
            cpu_time=int(cpu) / 1e9 if cpu and cpu.strip().isdigit() else None,
            memory_peak=int(peak) if peak and peak.strip().isdigit() else None,
            oom_killed=bool(oom),
        )

    def kill(self) -> None:
        """SIGKILL every process in the cgroup."""
        if self.version == 2 and (self.directories[0] / "cgroup.kill").exists():
            with contextlib.suppress(OSError):
                (self.directories[0] / "cgroup.kill").write_text("1")
                return
        for directory in self.directories:
            _kill_members(directory / "cgroup.procs")

    def remove(self) -> bool:
        """Remove the cgroup; False while processes are still in it."""
        removed = True
        for directory in self.directories:
            try:
                directory.rmdir()
            except FileNotFoundError:
                pass
            except OSError:
                removed = False
        return removed


class Cgroups:
    """Makes per-execution cgroups under a parent directory (or, on v1, several)."""

    def __init__(self, version: int, parents: list[Path], controllers: frozenset[str]) -> None:
        self.version = version
        self.parents = parents
        self.controllers = controllers

    @property
    def limits_memory(self) -> bool:
        return "memory" in self.controllers

    @property
    def limits_processes(self) -> bool:
        return "pids" in self.controllers

    def describe(self) -> str:
        names = ", ".join(sorted(self.controllers)) or "no controllers"
        return f"cgroup v{self.version} ({names}) under {', '.join(map(str, self.parents))}"

    def create(self, name: str, limits: Limits) -> RunCgroup:
        directories = []
        try:
            for parent in self.parents:
                directory = parent / name
                directory.mkdir()
                directories.append(directory)
            group = RunCgroup(directories, self.version)
            self._limit(group, limits)
        except OSError:
            RunCgroup(directories, self.version).remove()
            raise
        return group

    def _limit(self, group: RunCgroup, limits: Limits) -> None:
        for directory in group.directories:
            if self.version == 2:
                files = {"memory.max": limits.memory, "pids.max": limits.processes}
                if limits.memory is not None and (directory / "memory.swap.max").exists():
                    files["memory.swap.max"] = 0
            else:
                files = {"memory.limit_in_bytes": limits.memory, "pids.max": limits.processes}
            for file, value in files.items():
                if value is not None and (directory / file).exists():
                    (directory / file).write_text(str(value))

    def leftovers(self, prefix: str) -> Iterator[RunCgroup]:
        """The cgroups of earlier executions whose names start with ``prefix``."""
        names = {p.name for parent in self.parents if parent.is_dir() for p in parent.iterdir()}
        for name in sorted(n for n in names if n.startswith(prefix)):
            directories = [p / name for p in self.parents if (p / name).is_dir()]
            if directories:  # else removed meanwhile (by its run's own retirement)
                yield RunCgroup(directories, self.version)


@dataclass(frozen=True)
class _Mount:
    root: str
    point: str
    fstype: str
    options: frozenset[str]


def _mounts() -> list[_Mount]:
    mounts = []
    for line in (_read(Path("/proc/self/mountinfo")) or "").splitlines():
        fields = line.split()
        dash = fields.index("-")
        fstype, options = fields[dash + 1], fields[dash + 3]
        if fstype in ("cgroup", "cgroup2"):
            mounts.append(_Mount(fields[3], fields[4], fstype, frozenset(options.split(","))))
    return mounts


def _own_paths() -> dict[str, str]:
    """Controller (or "" for v2) -> this process's cgroup path."""
    paths = {}
    for line in (_read(Path("/proc/self/cgroup")) or "").splitlines():
        _, controllers, path = line.split(":", 2)
        for controller in controllers.split(",") if controllers else [""]:
            paths[controller] = path
    return paths


def _inside(mount: _Mount, path: str) -> Path:
    """Where the cgroup ``path`` (relative to its hierarchy's root) is in this mount."""
    root = mount.root.rstrip("/")
    relative = path[len(root) :] if root and path.startswith(root) else path
    return Path(mount.point, relative.strip("/")) if relative.strip("/") else Path(mount.point)


def _writable(path: Path) -> bool:
    return path.is_dir() and os.access(path, os.W_OK | os.X_OK)


def _unified() -> tuple[_Mount, Path] | None:
    """The cgroup v2 mount, and this process's own cgroup in it."""
    mount = next((m for m in _mounts() if m.fstype == "cgroup2"), None)
    if mount is None:
        return None
    return mount, _inside(mount, _own_paths().get("", "/"))


def v2_cgroups() -> Cgroups | None:
    """cgroup v2 with the memory and pids controllers, where we may use them."""
    unified = _unified()
    if unified is None:
        return None
    mount, own = unified
    delegated = set((_read(own / "cgroup.subtree_control") or "").split())
    if {"memory", "pids"} <= delegated and _writable(own):
        return Cgroups(2, [own], frozenset(delegated & {"memory", "pids", "cpu"}))
    top = Path(mount.point)
    offered = set((_read(top / "cgroup.subtree_control") or "").split())
    if not ({"memory", "pids"} <= offered and _writable(top)):
        return None
    parent = top / "runenv"
    try:
        parent.mkdir(exist_ok=True)
        (parent / "cgroup.subtree_control").write_text("+memory +pids")
    except OSError:
        return None
    return Cgroups(2, [parent], frozenset({"memory", "pids"}))


def v1_cgroups() -> Cgroups | None:
    """cgroup v1 memory and pids hierarchies (and cpuacct when mounted), where writable."""
    own = _own_paths()
    parents: dict[str, Path] = {}
    for mount in _mounts():
        if mount.fstype != "cgroup":
            continue
        for controller in ("memory", "pids", "cpuacct"):
            if controller in mount.options and controller in own:
                parents[controller] = _inside(mount, own[controller])
    if "memory" not in parents or "pids" not in parents:
        return None
    if not all(_writable(p) for p in parents.values()):
        return None
    unique = list(dict.fromkeys(parents.values()))
    return Cgroups(1, unique, frozenset(parents))


def detect() -> Cgroups | None:
    """The best cgroup support here: v2, else v1, else None."""
    return v2_cgroups() or v1_cgroups()


def unified_hierarchy() -> Path | None:
    """This process's own cgroup in the v2 hierarchy, whatever controllers it has."""
    unified = _unified()
    return unified[1] if unified is not None else None


class Keeper:
    """The cgroups of one environment's runs: one made per run (or none, without cgroups),
    retired after it, and the stragglers removed at cleanup."""

    def __init__(self, cgroups: Cgroups | None, instance: str) -> None:
        self.cgroups = cgroups
        self.prefix = f"{PREFIX}{instance}-"
        self._runs = itertools.count()
        self._stale: list[RunCgroup] = []

    def new(self, limits: Limits) -> RunCgroup | None:
        """A cgroup for one run, with its limits.

        :raises EnvironmentUnavailableError: if it cannot be made.
        """
        if self.cgroups is None:
            return None
        try:
            return self.cgroups.create(f"{self.prefix}{next(self._runs)}", limits)
        except OSError as exc:
            raise EnvironmentUnavailableError(f"cannot create the run's cgroup: {exc}") from exc

    def relimit(self, cgroup: RunCgroup, limits: Limits) -> None:
        """Set the limits of a cgroup made for other ones (blocking, brief).

        :raises EnvironmentUnavailableError: if they cannot be set.
        """
        if self.cgroups is not None:
            try:
                self.cgroups._limit(cgroup, limits)
            except OSError as exc:
                raise EnvironmentUnavailableError(f"cannot limit the run's cgroup: {exc}") from exc

    async def retire(self, cgroup: RunCgroup, within: float = 1.0) -> None:
        """Kill what is left in ``cgroup`` and remove it; a killed task may take a moment
        to leave, so keep trying briefly, and leave the rest to :meth:`close`."""
        with anyio.CancelScope(shield=True), anyio.move_on_after(within):
            cgroup.kill()
            while not cgroup.remove():
                await anyio.sleep(0.005)
                cgroup.kill()
        if any(directory.exists() for directory in cgroup.directories):
            self._stale.append(cgroup)

    async def close(self) -> None:
        """Retire every cgroup of this environment still there."""
        stale, self._stale = self._stale, []
        if self.cgroups is not None:
            stale += list(self.cgroups.leftovers(self.prefix))
        for cgroup in stale:
            await self.retire(cgroup, within=2.0)

    def close_now(self) -> None:
        """:meth:`close` with no event loop (at interpreter exit)."""
        if self.cgroups is None:
            return
        for cgroup in self.cgroups.leftovers(self.prefix):
            cgroup.kill()
            for _ in range(100):
                if cgroup.remove():
                    break
                time.sleep(0.01)
