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

SANDBOX_UID = 65534


def sandbox_processes() -> list[str]:
    """Live processes running as the sandbox's uid (nothing else on a test machine does)."""
    found = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            status = Path(f"/proc/{entry.name}/status").read_text()
        except OSError:
            continue
        fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
        if fields["Uid"].split()[0] == str(SANDBOX_UID) and fields["State"].split()[0] != "Z":
            found.append(f"process {entry.name} {fields['Name'].strip()}")
    return found


async def sandbox_leftovers(env: SandboxRunEnvironment, tmp: Path) -> list[str]:
    for _ in range(50):  # a killed namespace takes a moment to disappear
        left = sandbox_processes()
        if not left:
            break
        await anyio.sleep(0.02)
    cgroups = []
    if env._cgroups is not None:
        prefix = f"{cgroup_support.PREFIX}{env._instance}-"
        cgroups = [str(c.directories[0]) for c in env._cgroups.leftovers(prefix)]
    return [str(p) for p in tmp.iterdir()] + left + cgroups


@pytest.fixture
def shared_tmp() -> Iterator[Path]:
    """A workspace parent the sandbox's uid can reach (pytest's own tmp_path is closed)."""
    path = Path(tempfile.mkdtemp(prefix="runenv-tests-", dir="/dev/shm"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path)


@pytest.fixture
async def sandbox(shared_tmp: Path) -> AsyncIterator[SandboxRunEnvironment]:
    async with SandboxRunEnvironment(tmp_dir=str(shared_tmp)) as env:
        yield env
    assert await sandbox_leftovers(env, shared_tmp) == []
