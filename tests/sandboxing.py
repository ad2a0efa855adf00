"""Fixtures and checks for tests that use the sandbox environment."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import anyio
import pytest

from run_environments.environments.sandbox import SandboxRunEnvironment
from run_environments.environments.sandbox import cgroups as cgroup_support
from run_environments.environments.sandbox.identities import DEFAULT_RANGE

SANDBOX_UIDS = DEFAULT_RANGE


def _parents() -> dict[int, int]:
    parents = {}
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                stat = Path(f"/proc/{entry.name}/stat").read_text()
            except OSError:
                continue
            parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
    return parents


def held(env: SandboxRunEnvironment | None) -> set[int]:
    """Processes of the sandboxes that ``env`` holds started ahead, by design."""
    roots = set()
    if env is not None:
        roots = {s.pid for s in (*env.held(), *env.servers()) if s.pid is not None}
    found: set[int] = set()
    parents = _parents()
    for pid in parents:
        current = pid
        while current > 1:
            if current in roots:
                found.add(pid)
                break
            current = parents.get(current, 0)
    return found


def sandbox_processes(env: SandboxRunEnvironment | None = None) -> list[str]:
    """Live processes running as a sandbox identity ``env`` has used (any, without ``env``),
    but for those of sandboxes ``env`` holds started ahead."""
    found = []
    excluded = held(env)
    ours = env.uids_used() if env is not None and os.geteuid() == 0 else None
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit() or int(entry.name) in excluded:
            continue
        try:
            status = Path(f"/proc/{entry.name}/status").read_text()
        except OSError:
            continue
        fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
        uid = int(fields["Uid"].split()[0])
        if uid in (SANDBOX_UIDS if ours is None else ours) and fields["State"].split()[0] != "Z":
            found.append(f"process {entry.name} {fields['Name'].strip()}")
    return found


async def eventually_no_processes(env: SandboxRunEnvironment | None = None) -> list[str]:
    """The sandbox processes still there after a moment (a killed namespace takes one)."""
    for _ in range(100):
        left = sandbox_processes(env)
        if not left:
            break
        await anyio.sleep(0.02)
    return left


async def sandbox_leftovers(env: SandboxRunEnvironment, tmp: Path) -> list[str]:
    """What ``env`` left: processes, workspaces and slots, cgroups (but what it holds ahead,
    once what it does in the background is done)."""
    await env.settle()  # set-ups and disposals under way
    left = await eventually_no_processes(env)
    ahead = env.held()
    slots = {s.slot for s in (*ahead, *env.servers())}
    cgroup_dirs = {s.cgroup for s in (*ahead, *env.servers()) if s.cgroup is not None}
    cgroups = []
    support = cgroup_support.detect()
    if support is not None:
        prefix = f"{cgroup_support.PREFIX}{env.instance}-"
        cgroups = [str(c.directories[0]) for c in support.leftovers(prefix)]
    home = tmp / f"runenv-{env.instance}"
    paths = [str(p) for p in tmp.iterdir() if p != home]
    if home.exists():  # while the environment lives: its lock, and what it holds ahead
        paths += [str(p) for p in home.iterdir() if p.name != "owner.lock" and str(p) not in slots]
    return paths + left + [c for c in cgroups if c not in cgroup_dirs]


@pytest.fixture
def shared_tmp() -> Iterator[Path]:
    """A workspace parent the sandbox's uid can reach (pytest's own tmp_path is closed)."""
    path = Path(tempfile.mkdtemp(prefix="runenv-tests-", dir="/dev/shm"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path)


@pytest.fixture(params=["cold", "warm"])
async def sandbox(
    request: pytest.FixtureRequest, shared_tmp: Path
) -> AsyncIterator[SandboxRunEnvironment]:
    """The sandbox two ways: every run in a sandbox of its own (``warm=False``), and Python
    runs through a fork server that is ready before the first run."""
    warm = request.param == "warm"
    async with SandboxRunEnvironment(tmp_dir=str(shared_tmp), warm=warm) as env:
        if warm:
            assert await env.warm_up() == 1
        yield env
    assert not env.held()
    assert not env.servers()
    assert await sandbox_leftovers(env, shared_tmp) == []
