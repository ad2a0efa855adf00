"""Small helpers shared by the tests."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import anyio
import httpx


@contextmanager
def shm_directory(name: str, mode: int) -> Iterator[Path]:
    """A directory of this test run in /dev/shm, removed with whatever is in it afterwards
    (files of other uids, mounts a killed server left: ``rm -rf`` copes with them all)."""
    path = Path("/dev/shm") / f"runenv-{name}-{os.getpid()}"
    path.mkdir(mode=mode)
    try:
        yield path
    finally:
        subprocess.run(["rm", "-rf", str(path)], check=True)


def process_state(pid: int) -> str:
    """The state letter of ``pid`` ("Z" for a zombie), or "gone"."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return "gone"


def processes_whose_environment(has: Callable[[list[bytes]], bool]) -> list[str]:
    """Live processes (not zombies) whose environment (``NAME=value`` entries) ``has``
    says yes to, each named."""
    found = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/environ", "rb") as fh:
                environ = fh.read().split(b"\0")
        except OSError:
            continue
        if has(environ) and process_state(int(entry.name)) not in ("gone", "Z", "X"):
            found.append(f"process {entry.name}")
    return found


def is_running(pid: int) -> bool:
    """Whether ``pid`` is a live process (a zombie is dead, just not yet reaped)."""
    return process_state(pid) not in ("gone", "Z", "X")


async def wait_until_gone(pid: int, within: float = 10) -> bool:
    """Wait (at most ``within`` seconds) for ``pid`` to die; whether it did."""
    with anyio.move_on_after(within):
        while is_running(pid):
            await anyio.sleep(0.02)
    return not is_running(pid)


def answers_every_api(base: str, environment: str) -> None:
    """The server at ``base`` runs code in ``environment`` through the native API,
    SandboxFusion's /run_code (C++: a compile step) and Piston's /execute (with stdin)."""
    native = httpx.post(f"{base}/v1/execute", json={"code": "print(6 * 7)", "language": "python"},
                        timeout=60).json()  # fmt: skip
    assert native["success"] and native["stdout"] == "42\n", native
    assert native["environment"] == environment, native
    fusion = httpx.post(
        f"{base}/run_code",
        json={"code": '#include <stdio.h>\nint main(){puts("c");}', "language": "cpp"},
        timeout=60,
    ).json()
    assert fusion["status"] == "Success" and fusion["run_result"]["stdout"] == "c\n", fusion
    piston = httpx.post(
        f"{base}/api/v2/execute",
        json={"language": "python", "version": "*", "files": [{"content": "print(input())"}],
              "stdin": "via piston"},
        timeout=60,
    ).json()  # fmt: skip
    assert piston["run"]["stdout"] == "via piston\n", piston
