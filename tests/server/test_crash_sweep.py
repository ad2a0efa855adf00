"""A server killed with SIGKILL mid-run leaves directories, mounts and cgroups; the next
start sweeps every one of them (its processes died with it)."""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import anyio
import httpx
import pytest
from e2b import AsyncSandbox

from run_environments.environments.sandbox import cgroups
from tests.helpers import shm_directory

from .hostile import RUNENV, free_port, metric, send_json, wait_for

pytestmark = pytest.mark.anyio


@pytest.fixture
def place() -> Iterator[Path]:
    with shm_directory("crash", 0o755) as path:
        yield path


def start(place: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    env = {**os.environ, "RUNENV_TMPDIR": str(place), "RUNENV_SESSION_QUOTA": str(64 << 20)}
    proc = subprocess.Popen(
        [RUNENV, "serve", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"

    def up() -> bool:
        assert proc.poll() is None, "the server died"
        try:
            return httpx.get(f"{url}/healthz", timeout=5).status_code == 200
        except httpx.TransportError:
            return False

    wait_for(up, 60, "the server's start")
    return proc, url


def cgroups_of(instance: str) -> list[Path]:
    detected = cgroups.detect()
    if detected is None:
        return []
    return [d for c in detected.leftovers(f"runenv-{instance}-") for d in c.directories]


def mounts_under(place: Path) -> list[str]:
    text = Path("/proc/self/mountinfo").read_text()
    return [
        line.split()[4] for line in text.splitlines() if line.split()[4].startswith(f"{place}/")
    ]


def marked_processes(marker: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        try:
            if marker.encode() in (entry / "cmdline").read_bytes():
                found.append(int(entry.name))
        except (OSError, ValueError):
            continue
    return found


async def test_a_killed_server_leaves_nothing_after_the_next_start(place: Path) -> None:
    first, url = start(place)
    try:
        marker = f"runenv-crash-marker-{os.getpid()}"
        running = send_json(url, "/v1/execute", {"code": "import time\ntime.sleep(120)",
                                                 "args": [marker], "timeout": 200})  # fmt: skip
        wait_for(lambda: metric(url, "runenv_in_flight") == 1, what="the run")
        sbx = await AsyncSandbox.create(debug=True, sandbox_url=url)
        await sbx.files.write("/home/user/kept.txt", "left behind")
        homes = [p for p in place.iterdir() if p.name.startswith("runenv-")]
        assert len(homes) == 1
        instance = homes[0].name.removeprefix("runenv-")
        assert marked_processes(marker)
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
    running.close()
    # what the crash left: the instance's directory, its session's mount, its cgroups
    assert (place / f"runenv-{instance}").exists()
    assert mounts_under(place)
    assert cgroups_of(instance) or cgroups.detect() is None
    with anyio.fail_after(30):
        while marked_processes(marker):  # they die with the server (--die-with-parent)
            await anyio.sleep(0.05)

    second, _ = start(place)
    try:
        assert not (place / f"runenv-{instance}").exists()
        assert mounts_under(place) == []
        assert cgroups_of(instance) == []
        assert [p.name for p in place.iterdir()] != []  # the second server's own directory
    finally:
        second.terminate()
        second.wait(timeout=30)
    assert list(place.iterdir()) == []  # a server stopped normally removes its own
