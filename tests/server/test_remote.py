"""RemoteRunEnvironment and the client, against a real server."""

from __future__ import annotations

from collections.abc import AsyncIterator

import anyio
import pytest

from run_environments import (
    AuthenticationError,
    CompileResult,
    InvalidOptionsError,
    LiveInput,
    RunEnvironment,
    SandboxRunEnvironment,
    SyncRunEnvironment,
    UnreachableError,
)
from run_environments.client import Client, SyncClient
from run_environments.environments.remote import RemoteRunEnvironment
from run_environments.server import ServerSettings
from run_environments.testing import EnvironmentBehaviour
from run_environments.testing.samples import HELLO
from tests.sandboxing import sandbox_leftovers

from .conftest import running, serving
from .hostile import free_port

pytestmark = pytest.mark.anyio


class TestRemote(EnvironmentBehaviour):
    """The shared suite, through HTTP, against a server running the sandbox."""

    live_input = False  # a request carries its stdin whole: see the refusal below

    @pytest.fixture
    async def env(self, url: str, server_envs: dict, workspaces) -> AsyncIterator[RunEnvironment]:
        self.server_env = server_envs["sandbox"]
        self.workspaces = workspaces
        async with RemoteRunEnvironment(url) as env:
            yield env

    def result_environment(self, env: RunEnvironment) -> str:
        return "sandbox"  # where the server ran it

    async def leftovers(self, env: RunEnvironment) -> list[str]:
        assert isinstance(self.server_env, SandboxRunEnvironment)
        left: list[str] = []
        with anyio.move_on_after(20):  # the server notices a client that left a moment later
            while left := await sandbox_leftovers(self.server_env, self.workspaces):
                await anyio.sleep(0.1)
        return left


async def test_live_input_is_refused_with_a_precise_error(url: str) -> None:
    async with RemoteRunEnvironment(url) as env:
        with pytest.raises(InvalidOptionsError, match="not input written while"):
            await env.execute("print(1)", stdin=LiveInput())


async def test_on_compile_hears_of_the_compile_step_before_the_result(url: str) -> None:
    heard: list[CompileResult] = []
    async with RemoteRunEnvironment(url) as env:
        result = await env.execute(HELLO["c"], language="c", on_compile=heard.append)
    assert result.success and heard == [result.compile]


async def test_unreachable_server_is_a_precise_error() -> None:
    async with RemoteRunEnvironment(f"http://127.0.0.1:{free_port()}") as env:
        with pytest.raises(UnreachableError, match=r"127\.0\.0\.1"):
            await env.execute("print(1)")
        assert not await env.is_ready()
        status = await env.status()
        assert not status.ready and status.reason is not None and "127.0.0.1" in status.reason


async def test_wrong_token_is_an_authentication_error(server_envs: dict) -> None:
    with running(ServerSettings(token="t0ken"), {"sandbox": server_envs["sandbox"]}) as base:
        async with RemoteRunEnvironment(base, token="nope") as env:
            with pytest.raises(AuthenticationError):
                await env.execute("print(1)")
        async with RemoteRunEnvironment(base, token="t0ken") as env:
            assert (await env.execute("print(1)")).stdout == "1\n"


async def test_dropped_connection_is_a_precise_error(server_envs: dict) -> None:
    """The server goes away in the middle of a run, dropping its connections."""
    errors: list[BaseException] = []
    with serving(ServerSettings(), {"sandbox": server_envs["sandbox"]}) as (base, server):
        async with Client(base) as client:
            started = anyio.Event()

            async def run() -> None:
                try:
                    code = "import time\nprint(1, flush=True)\ntime.sleep(20)"
                    await client.execute(code, on_stdout=lambda _: started.set())
                except UnreachableError as exc:
                    errors.append(exc)

            async with anyio.create_task_group() as tg:
                tg.start_soon(run)
                await started.wait()
                server.force_exit = server.should_exit = True  # as if it crashed
    assert len(errors) == 1


def test_sync_client_and_facade(url: str) -> None:
    with SyncClient(url) as client:
        assert client.execute("print(2 + 2)").stdout == "4\n"
        assert client.health()["status"] == "ok"
        assert "sandbox" in client.languages()["environments"]
    with SyncRunEnvironment(RemoteRunEnvironment(url, environment="local")) as env:
        result = env.execute("import os; print(os.getcwd() != '/workspace')")
        assert result.stdout == "True\n" and result.environment == "local"


async def test_refusals_come_back_as_the_same_exceptions_with_their_fields(url: str) -> None:
    from run_environments import UnknownEnvironmentError, UnknownLanguageError

    async with Client(url) as client:
        with pytest.raises(UnknownLanguageError) as language:
            await client.execute("1", language="it's-cobol")
        assert language.value.language == "it's-cobol"  # read from a field, not the message
        assert "python" in language.value.supported
        with pytest.raises(UnknownEnvironmentError) as environment:
            await client.execute("1", environment="docker")
        assert environment.value.name == "docker"
        assert environment.value.known == ["local", "sandbox"]
