"""The Lambda environment against AWS's own Runtime Interface Emulator running the executor
through AWS's runtime interface client (awslambdaric), started on 127.0.0.1; boto3 invokes
it through ``endpoint_url`` exactly as it invokes a deployed function. Live against AWS
when credentials and a function are given."""

from __future__ import annotations

import http.server
import io
import json
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
import threading
import zipfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import ClassVar

import pytest

from run_environments import (
    AuthenticationError,
    EnvironmentUnavailableError,
    InvalidOptionsError,
    LanguageUnavailableError,
    LiveInput,
    PlatformTimeoutError,
    RateLimitError,
    RunEnvironment,
    ServiceError,
    UnreachableError,
)
from run_environments.environments.serverless.aws_lambda import LambdaRunEnvironment
from run_environments.environments.serverless.deploy import build_package
from tests.serverless import ServerlessBehaviour, free_port, lambda_emulator, leftovers_of

pytestmark = pytest.mark.anyio

CREDENTIALS = {"aws_access_key_id": "test", "aws_secret_access_key": "test"}


@pytest.fixture(scope="module")
def workspaces(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("lambda-workspaces")


@pytest.fixture(scope="module")
def emulator(tmp_path_factory: pytest.TempPathFactory, workspaces: Path) -> Iterator[str]:
    with lambda_emulator(tmp_path_factory.mktemp("rie"), workspaces) as url:
        yield url


def make(url: str, function: str = "function", **kwargs: object) -> LambdaRunEnvironment:
    """The environment for the emulator: its one function, one invocation at a time (the
    emulator serves one; a deployed function scales out)."""
    settings: dict = {"region": "us-east-1", "max_concurrency": 1, **CREDENTIALS} | kwargs
    return LambdaRunEnvironment(function, endpoint_url=url, **settings)


class TestLambda(ServerlessBehaviour):
    """The shared suite through boto3 and the emulator (cancelling: see ServerlessBehaviour)."""

    @pytest.fixture
    async def env(self, emulator: str, workspaces: Path) -> AsyncIterator[RunEnvironment]:
        self.workspaces = workspaces
        async with make(emulator) as env:
            yield env


async def test_live_input_is_refused_with_a_precise_error(emulator: str) -> None:
    async with make(emulator) as env:
        with pytest.raises(InvalidOptionsError, match="not input written while"):
            await env.execute("print(1)", stdin=LiveInput())


async def test_status_lists_what_the_function_can_run(emulator: str) -> None:
    async with make(emulator) as env:
        status = await env.status()
        assert status.ready
        python = next(lang for lang in status.languages if lang.name == "python")
        assert python.available


async def test_the_function_s_own_variables_are_not_passed_on(emulator: str) -> None:
    code = "import os, json; print(json.dumps(sorted(os.environ)))"
    async with make(emulator) as env:
        result = await env.execute(code, env={"MINE": "1"})
    names = set(eval(result.stdout))
    assert "MINE" in names
    assert not [n for n in names if n.startswith(("AWS_", "_", "LAMBDA"))], names


async def test_a_daemon_dies_with_its_run(emulator: str, workspaces: Path) -> None:
    code = textwrap.dedent("""\
        import os, time
        if os.fork() == 0:
            os.setsid()
            if os.fork() == 0:
                time.sleep(300)
            os._exit(0)
        print("started")
        """)
    async with make(emulator) as env:
        result = await env.execute(code)
    assert result.stdout == "started\n"
    assert await leftovers_of(workspaces) == []


async def test_a_run_longer_than_the_function_is_stopped_inside_it_with_its_output(
    tmp_path: Path, workspaces: Path
) -> None:
    # the function may run 5 s and keeps 2 for answering: the run's 60 s timeout ends at 3
    with lambda_emulator(tmp_path, workspaces, timeout=5) as url:
        async with make(url) as env:
            result = await env.execute(
                "import time\nprint('partial', flush=True)\ntime.sleep(60)", timeout=60
            )
    assert result.timed_out
    assert result.stdout == "partial\n"
    assert "function's own time limit" in (result.error or "")
    assert result.execution_time < 5
    assert await leftovers_of(workspaces) == []


async def test_a_function_stopped_by_its_platform_timeout_is_a_precise_error(
    tmp_path: Path, workspaces: Path
) -> None:
    # a handler that overruns (the executor never does: it stops the run first)
    (tmp_path / "slow.py").write_text(
        "import time\ndef handler(event, context):\n    time.sleep(30)\n"
    )
    with lambda_emulator(tmp_path, workspaces, timeout=2, handler="slow.handler") as url:
        async with make(url) as env:
            with pytest.raises(PlatformTimeoutError, match="Task timed out after 2"):
                await env.execute("print(1)")


async def test_a_request_past_six_megabytes_is_refused_before_it_is_sent(emulator: str) -> None:
    async with make(emulator) as env:
        with pytest.raises(InvalidOptionsError, match="takes at most 6291456"):
            await env.execute("print(1)", files={"big.bin": b"\0" * (5 << 20)})


async def test_a_result_past_six_megabytes_is_a_precise_error(emulator: str) -> None:
    async with make(emulator) as env:
        with pytest.raises(InvalidOptionsError, match="less output"):
            await env.execute(
                "import sys\nsys.stdout.write('\\x01' * 3_000_000)", max_output_bytes=4 << 20
            )
        result = await env.execute("print('still here')")
    assert result.stdout == "still here\n"


async def test_a_language_the_function_lacks_is_a_precise_error(
    tmp_path: Path, workspaces: Path
) -> None:
    # an instance whose PATH has Python's directory only, as a Python runtime of Lambda
    path = f"{Path(os.path.realpath(sys.executable)).parent}"
    with lambda_emulator(tmp_path, workspaces, path=path) as url:
        async with make(url) as env:
            with pytest.raises(LanguageUnavailableError, match="ruby cannot run in the lambda"):
                await env.execute("puts 1", language="ruby")


async def test_platform_errors_are_translated(tmp_path: Path) -> None:
    async with LambdaRunEnvironment(
        "function", endpoint_url=f"http://127.0.0.1:{free_port()}", region="us-east-1",
        **CREDENTIALS,
    ) as env:  # fmt: skip
        with pytest.raises(UnreachableError):
            await env.execute("print(1)")
    async with LambdaRunEnvironment("", region="us-east-1") as env:
        with pytest.raises(EnvironmentUnavailableError, match="RUNENV_LAMBDA_FUNCTION"):
            await env.execute("print(1)")
    async with LambdaRunEnvironment("function", profile="no-such-profile") as env:
        with pytest.raises(AuthenticationError, match="no-such-profile"):
            await env.execute("print(1)")
        assert not await env.is_ready()


@pytest.mark.skipif(
    not os.environ.get("RUNENV_TEST_LAMBDA_FUNCTION"),
    reason="live test: needs AWS credentials and RUNENV_TEST_LAMBDA_FUNCTION (a deployed"
    " executor); this machine reaches no AWS endpoint",
)
async def test_live_lambda() -> None:
    async with LambdaRunEnvironment(os.environ["RUNENV_TEST_LAMBDA_FUNCTION"]) as env:
        result = await env.execute("import sys; print(sys.version_info[0]); sys.exit(3)")
        assert result.stdout == "3\n"
        assert result.exit_code == 3
        assert (await env.status()).ready


def test_runenv_run_and_doctor_with_the_lambda_environment(emulator: str) -> None:
    runenv = str(Path(sys.executable).parent / "runenv")
    env = {
        **os.environ,
        "RUNENV_LAMBDA_FUNCTION": "function",
        "RUNENV_LAMBDA_ENDPOINT_URL": emulator,
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ACCESS_KEY_ID": "test",
        "AWS_SECRET_ACCESS_KEY": "test",
    }
    code = "import sys; print(sys.stdin.read().upper()); sys.exit(5)"
    done = subprocess.run(
        [runenv, "run", "-E", "lambda", "-c", code],
        input="through lambda",
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert (done.stdout, done.returncode) == ("THROUGH LAMBDA\n", 5), done.stderr
    doctor = subprocess.run(
        [runenv, "doctor", "--json"], capture_output=True, text=True, env=env, timeout=300
    )
    found = {e["name"]: e for e in json.loads(doctor.stdout)["environments"]}
    assert found["lambda"]["ready"], found["lambda"]


async def test_a_handler_that_fails_is_a_service_error_naming_its_error(
    tmp_path: Path, workspaces: Path
) -> None:
    (tmp_path / "failing.py").write_text(
        "def handler(event, context):\n    raise KeyError('no such thing')\n"
    )
    with lambda_emulator(tmp_path, workspaces, handler="failing.handler") as url:
        async with make(url) as env:
            with pytest.raises(ServiceError, match="failed: KeyError: 'no such thing'"):
                await env.execute("print(1)")


class LambdaAPI(http.server.BaseHTTPRequestHandler):
    """Lambda's API as it answers a refused invoke: the status, the error's type in
    ``X-Amzn-ErrorType`` and a JSON message (what botocore parses)."""

    answers: ClassVar[dict[str, tuple[int, str]]] = {
        "throttled": (429, "TooManyRequestsException"),
        "too-large": (413, "RequestTooLargeException"),
        "missing": (404, "ResourceNotFoundException"),
        "denied": (403, "AccessDeniedException"),
    }

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers["Content-Length"]))
        function = self.path.split("/functions/")[1].split("/")[0]
        status, kind = self.answers[function]
        body = json.dumps({"Type": "User", "message": f"refused: {kind}"}).encode()
        self.send_response(status)
        self.send_header("X-Amzn-ErrorType", kind)
        self.send_header("Retry-After", "7")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


async def test_lambda_s_refusals_are_translated() -> None:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), LambdaAPI)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        expected: dict[str, type[Exception]] = {
            "throttled": RateLimitError,
            "too-large": InvalidOptionsError,
            "missing": EnvironmentUnavailableError,
            "denied": AuthenticationError,
        }
        for function, error in expected.items():
            # one attempt: botocore would retry throttling with backoff
            async with make(url, function, max_attempts=1) as env:
                with pytest.raises(
                    error, match=f"refused: {LambdaAPI.answers[function][1]}"
                ) as raised:
                    await env.execute("print(1)")
            if isinstance(raised.value, RateLimitError):
                assert raised.value.retry_after == 7
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def shared_directory() -> Iterator[Path]:
    """A directory uid 65534 can reach (pytest's own are root's alone)."""
    directory = Path(tempfile.mkdtemp(prefix="runenv-lambda-"))
    directory.chmod(0o755)
    yield directory
    shutil.rmtree(directory)


async def test_the_deployed_package_as_an_unprivileged_user_keeps_the_function_s_secrets(
    shared_directory: Path,
) -> None:
    # As on Lambda: the package's own code, run by a user without privileges, whose
    # runtime's variables hold the role's credentials; a program (the same user) must not
    # read them from /proc, and the ones it is given do not include them.
    package = shared_directory / "package"
    zipfile.ZipFile(io.BytesIO(build_package())).extractall(package)
    workspaces = shared_directory / "workspaces"
    workspaces.mkdir(mode=0o777)
    workspaces.chmod(0o777)
    code = (
        "import os\n"
        "print(sorted(k for k in os.environ if k.startswith('AWS')))\n"
        "try:\n"
        "    print(open(f'/proc/{os.getppid()}/environ', 'rb').read()[:20])\n"
        "except PermissionError as exc:\n"
        "    print('refused', exc.errno, os.getuid())\n"
    )
    with lambda_emulator(shared_directory, workspaces, package=package) as url:
        async with make(url) as env:
            result = await env.execute(code)
    assert result.stdout == "[]\nrefused 13 65534\n", result
    assert await leftovers_of(workspaces) == []
