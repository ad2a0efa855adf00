"""E2BRunEnvironment through the official SDK, against runenv serve (offline), and live
against the E2B cloud when E2B_API_KEY is set."""

from __future__ import annotations

import fcntl
import os
import socket
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import pytest

from run_environments import (
    AuthenticationError,
    RunEnvironment,
    SandboxRunEnvironment,
    UnreachableError,
    create_environment,
)
from run_environments.environments.e2b import E2BRunEnvironment
from run_environments.testing import EnvironmentBehaviour
from tests.sandboxing import eventually_no_processes

from .hostile import free_port

pytestmark = pytest.mark.anyio


class TestE2BOffline(EnvironmentBehaviour):
    """The shared suite: the real SDK code path, end to end, against runenv serve."""

    @pytest.fixture
    async def env(self, url: str, server_envs: dict) -> AsyncIterator[RunEnvironment]:
        self.server_env = server_envs["sandbox"]
        async with E2BRunEnvironment(debug=True, sandbox_url=url) as env:
            self.env_ = env
            yield env

    async def leftovers(self, env: RunEnvironment) -> list[str]:
        assert isinstance(self.server_env, SandboxRunEnvironment)
        processes = await eventually_no_processes(self.server_env)
        sandbox = await self.env_.sandbox()
        workspaces = [e.name for e in await sandbox.files.list("/home/user")
                      if e.name.startswith("runenv-")]  # fmt: skip
        return processes + workspaces


async def test_registered_by_name() -> None:
    env = create_environment("e2b", debug=True, sandbox_url="http://127.0.0.1:9")
    assert isinstance(env, E2BRunEnvironment)


async def test_no_key_is_a_precise_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("E2B_API_KEY", raising=False)
    monkeypatch.delenv("E2B_DEBUG", raising=False)
    env = E2BRunEnvironment()
    assert not await env.is_ready()
    status = await env.status()
    assert status.reason is not None and "E2B_API_KEY" in status.reason
    with pytest.raises(AuthenticationError, match="E2B_API_KEY"):
        await env.execute("print(1)")


async def test_unreachable_envd_is_a_precise_error() -> None:
    async with E2BRunEnvironment(debug=True, sandbox_url=f"http://127.0.0.1:{free_port()}") as env:
        with pytest.raises(UnreachableError):
            await env.execute("print(1)")
        assert not await env.is_ready()


async def test_debug_mode_on_the_default_port(server_envs: dict, monkeypatch) -> None:
    """E2B_DEBUG=true makes the SDK use localhost:49983; serve there, if that port is free."""
    from run_environments.server import ServerSettings

    from .conftest import serving

    # Another copy of this suite on the machine takes turns with us for the fixed port.
    with open("/tmp/runenv-tests-port-49983.lock", "a") as lock:  # noqa: ASYNC230
        await anyio.to_thread.run_sync(fcntl.flock, lock, fcntl.LOCK_EX)
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", 49983)) == 0:
                pytest.skip("port 49983 is taken by a program that is not this test suite")
        monkeypatch.setenv("E2B_DEBUG", "true")
        settings = ServerSettings(port=49983)
        with serving(settings, {"sandbox": server_envs["sandbox"]}, port=49983):
            async with E2BRunEnvironment() as env:
                assert (await env.execute("print('debug mode')")).stdout == "debug mode\n"


@pytest.mark.skipif(
    not os.environ.get("E2B_API_KEY"),
    reason="E2B_API_KEY is not set: the E2B cloud cannot be reached without it",
)
async def test_live_cloud() -> None:
    async with E2BRunEnvironment() as env:
        result = await env.execute("import sys; print(sys.version_info[0])")
        assert result.stdout == "3\n" and result.environment == "e2b"
        result = await env.execute("echo $((6 * 7))", language="bash", timeout=30)
        assert result.stdout == "42\n"
        with anyio.fail_after(60):
            slow = await env.execute("sleep 30", language="bash", timeout=2)
        assert slow.timed_out


EXITING_SCRIPT = """
import sys
import anyio
from run_environments.environments.e2b import E2BRunEnvironment

async def main() -> None:
    env = E2BRunEnvironment(debug=True, sandbox_url=sys.argv[1])
    print((await env.execute("print(6 * 7)")).stdout.strip())
    if sys.argv[2] == "cleanup":
        await env.cleanup()

anyio.run(main)
"""


@pytest.mark.parametrize("ending", ["cleanup", "forgotten"])
def test_scripts_exit_cleanly(url: str, ending: str, tmp_path: Path) -> None:
    """The SDK's HTTP client finishes on threads of its own: a script that exits right after
    its last call must not abort in the interpreter's finalization (it did in 2 of 8 runs)."""
    script = tmp_path / "script.py"
    script.write_text(EXITING_SCRIPT)
    statuses = []
    for _ in range(10):
        done = subprocess.run([sys.executable, str(script), url, ending], capture_output=True,
                              text=True, timeout=120, check=False)  # fmt: skip
        assert done.stdout == "42\n", done.stderr
        statuses.append(done.returncode)
    assert statuses == [0] * 10
