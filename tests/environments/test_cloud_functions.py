"""The Cloud Functions environment against Google's functions-framework serving the
deployed source's ``main.py`` on 127.0.0.1; the environment calls it over HTTP exactly as
it calls a deployed function. Live against Google Cloud when credentials and a URL are
given."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import anyio
import httpx
import pytest

from run_environments import (
    EnvironmentUnavailableError,
    InvalidOptionsError,
    LiveInput,
    RunEnvironment,
    ServiceError,
    UnreachableError,
)
from run_environments.environments.serverless.gcf import CloudFunctionsRunEnvironment
from run_environments.testing import EnvironmentBehaviour
from tests.serverless import free_port, functions_framework, leftovers_of

pytestmark = pytest.mark.anyio


@pytest.fixture(scope="module")
def workspaces(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("gcf-workspaces")


@pytest.fixture(scope="module")
def function_url(tmp_path_factory: pytest.TempPathFactory, workspaces: Path) -> Iterator[str]:
    with functions_framework(tmp_path_factory.mktemp("gcf"), workspaces) as url:
        yield url


class TestCloudFunctions(EnvironmentBehaviour):
    """The shared suite, unchanged, over HTTP to functions-framework: output streams as the
    program writes (NDJSON), and a request cancelled stops its run in the function."""

    live_input = False  # a request carries its stdin whole: see the refusal below

    async def leftovers(self, env: RunEnvironment) -> list[str]:
        with anyio.move_on_after(10):  # the function notices a client that left at once
            while left := await leftovers_of(self.workspaces):
                await anyio.sleep(0.1)
        return left

    @pytest.fixture
    async def env(self, function_url: str, workspaces: Path) -> AsyncIterator[RunEnvironment]:
        self.workspaces = workspaces
        async with CloudFunctionsRunEnvironment(function_url, auth=False) as env:
            yield env


async def test_live_input_is_refused_with_a_precise_error(function_url: str) -> None:
    async with CloudFunctionsRunEnvironment(function_url, auth=False) as env:
        with pytest.raises(InvalidOptionsError, match="not input written while"):
            await env.execute("print(1)", stdin=LiveInput())


async def test_status_lists_what_the_function_can_run(function_url: str) -> None:
    async with CloudFunctionsRunEnvironment(function_url, auth=False) as env:
        status = await env.status()
    assert status.ready
    assert any(lang.name == "python" and lang.available for lang in status.languages)


async def test_a_run_longer_than_the_function_is_stopped_inside_it_with_its_output(
    tmp_path: Path, workspaces: Path
) -> None:
    # as deployed: the function's timeout is in RUNENV_FUNCTION_TIMEOUT; 2 s are kept
    with functions_framework(tmp_path, workspaces, RUNENV_FUNCTION_TIMEOUT="5") as url:
        async with CloudFunctionsRunEnvironment(url, auth=False) as env:
            result = await env.execute(
                "import time\nprint('partial', flush=True)\ntime.sleep(60)", timeout=60
            )
    assert result.timed_out
    assert result.stdout == "partial\n"
    assert "function's own time limit" in (result.error or "")
    assert await leftovers_of(workspaces) == []


async def test_a_function_that_overruns_the_framework_s_limit_is_a_service_error(
    tmp_path: Path, workspaces: Path
) -> None:
    # a function that overruns (the executor never does: it stops the run first): the
    # framework's server stops its worker at CLOUD_RUN_TIMEOUT_SECONDS and answers 500
    # (Cloud Run's front end answers 504 instead: a PlatformTimeoutError)
    slow = "import time\ndef execute(request):\n    time.sleep(30)\n"
    variables = {"CLOUD_RUN_TIMEOUT_SECONDS": "2", "THREADS": "1"}
    with functions_framework(tmp_path, workspaces, slow, **variables) as url:
        async with CloudFunctionsRunEnvironment(url, auth=False) as env:
            with pytest.raises(ServiceError, match="answered HTTP 500"):
                await env.execute("print(1)")


async def test_bad_requests_get_a_precise_answer_from_the_function(function_url: str) -> None:
    async with httpx.AsyncClient() as http:
        for body, expected in (
            (b"not json", "must be a JSON object"),
            (b'{"code": 1}', "code must be a string"),
            (b'{"code": "x", "language": "cobol"}', "unknown language 'cobol'"),
            (b'{"code": "x", "timeout": "soon"}', "timeout must be a number"),
            (b'{"code": "x", "files_base64": {"a": "%%%"}}', "not valid base64"),
            (b'{"code": "x", "surprise": 1}', "unknown request field"),
        ):
            response = await http.post(function_url, content=body)
            assert response.status_code in (200, 400)
            assert expected in response.json()["error"]["message"], body


async def test_platform_errors_are_translated() -> None:
    async with CloudFunctionsRunEnvironment(f"http://127.0.0.1:{free_port()}/") as env:
        with pytest.raises(UnreachableError):
            await env.execute("print(1)")
    async with CloudFunctionsRunEnvironment("") as env:
        with pytest.raises(EnvironmentUnavailableError, match="RUNENV_CLOUD_FUNCTIONS_URL"):
            await env.execute("print(1)")
        assert not await env.is_ready()


@pytest.mark.skipif(
    not (
        os.environ.get("GOOGLE_APPLICATION_CREDENTIALS") and os.environ.get("RUNENV_TEST_GCF_URL")
    ),
    reason="live test: needs GOOGLE_APPLICATION_CREDENTIALS and RUNENV_TEST_GCF_URL (a deployed"
    " executor); this machine reaches no Google endpoint",
)
async def test_live_cloud_functions() -> None:
    async with CloudFunctionsRunEnvironment(os.environ["RUNENV_TEST_GCF_URL"]) as env:
        result = await env.execute("import sys; print(sys.version_info[0]); sys.exit(3)")
        assert result.stdout == "3\n"
        assert result.exit_code == 3


def test_runenv_run_with_the_cloud_functions_environment(function_url: str) -> None:
    runenv = str(Path(sys.executable).parent / "runenv")
    env = {**os.environ, "RUNENV_CLOUD_FUNCTIONS_URL": function_url}
    done = subprocess.run(
        [
            runenv,
            "run",
            "-E",
            "cloud-functions",
            "-l",
            "bash",
            "-c",
            "echo $1; exit 6",
            "--",
            "arg",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert (done.stdout, done.returncode) == ("arg\n", 6), done.stderr
