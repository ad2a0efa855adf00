"""The vendors' own local runtimes of serverless functions, started by the tests on
127.0.0.1: AWS's Lambda Runtime Interface Emulator running a handler through AWS's runtime
interface client (awslambdaric), Google's functions-framework, and moto's server for the
Lambda API that deploys. Each stopped by its process group."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import anyio

from run_environments import RunEnvironment
from run_environments.environments.serverless import deploy
from run_environments.testing import EnvironmentBehaviour
from tests.helpers import processes_whose_environment

BIN = Path(sys.executable).parent
RIE = BIN / "aws-lambda-rie"
"""Put there by scripts/setup, from the aws-sam-cli wheel."""


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _wait_for(port: int, process: subprocess.Popen[bytes], log: Path, within: float = 60) -> None:
    end = time.monotonic() + within
    while time.monotonic() < end:
        if process.poll() is not None:
            raise RuntimeError(f"it exited with {process.returncode}: {log.read_text()[-2000:]}")
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listens on {port} after {within} s: {log.read_text()[-2000:]}")


@contextlib.contextmanager
def _started(argv: list[str], port: int, directory: Path, env: dict[str, str]) -> Iterator[int]:
    log = directory / f"server-{port}.log"
    setpriv = shutil.which("setpriv")  # the server dies with a test session that is killed
    if setpriv is not None and Path(argv[0]).name != "setpriv":
        argv = [setpriv, "--pdeathsig", "KILL", *argv]
    with open(log, "wb") as out:
        process = subprocess.Popen(
            argv, cwd=directory, env=env, stdout=out, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, start_new_session=True,
        )  # fmt: skip
    try:
        _wait_for(port, process, log)
        yield process.pid
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()


SYSTEM_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
"""A function's PATH: the system's tools (not a user's, such as rustup's shims that need
the user's home)."""


def _base_env(workspaces: Path) -> dict[str, str]:
    return {
        "PATH": SYSTEM_PATH,
        "LANG": "C.UTF-8",
        "HOME": os.environ.get("HOME", "/root"),
        "RUNENV_TMPDIR": str(workspaces),
    }


@contextlib.contextmanager
def lambda_emulator(
    directory: Path,
    workspaces: Path,
    *,
    timeout: int = 300,
    handler: str | None = None,
    path: str | None = None,
    package: Path | None = None,
) -> Iterator[str]:
    """The emulator serving ``handler`` (default: the executor) as function ``function``,
    with a function timeout of ``timeout`` seconds (and ``path`` as its PATH); yields its
    endpoint URL. With ``package`` (the deployed zip, unpacked where uid 65534 reaches), it
    runs as a deployed function does: as an unprivileged user (uid 65534), the package's
    code on the system's Python, only awslambdaric taken from here."""
    port, api = free_port(), free_port()
    env = (
        _base_env(workspaces)
        | {"PATH": path or SYSTEM_PATH}
        | {
            "AWS_LAMBDA_FUNCTION_TIMEOUT": str(timeout),
            "PYTHONPATH": str(directory),  # a test's own handler module
        }
    )
    argv = [
        str(RIE),
        "--runtime-interface-emulator-address", f"127.0.0.1:{port}",
        "--runtime-api-address", f"127.0.0.1:{api}",
        sys.executable, "-m", "awslambdaric", handler or deploy.HANDLER,
    ]  # fmt: skip
    if package is not None:
        site = next(p for p in sys.path if p.endswith("site-packages"))
        env["PYTHONPATH"] = f"{package}:{site}"
        argv[argv.index(sys.executable)] = "/usr/bin/python3"
        argv = [shutil.which("setpriv") or "setpriv", "--reuid=65534", "--regid=65534",
                "--clear-groups",
                "--pdeathsig", "KILL", *argv]  # fmt: skip
    with _started(argv, port, directory, env):
        yield f"http://127.0.0.1:{port}"


@contextlib.contextmanager
def functions_framework(
    directory: Path, workspaces: Path, main: str | None = None, **variables: str
) -> Iterator[str]:
    """Google's functions-framework serving the deployed source's ``main.py`` (or ``main``);
    yields the function's URL."""
    port = free_port()
    source = directory / "main.py"
    source.write_text(main or deploy.CLOUD_FUNCTIONS_MAIN)
    env = _base_env(workspaces) | variables
    argv = [
        sys.executable, "-m", "functions_framework", "--source", str(source),
        "--target", deploy.CLOUD_FUNCTIONS_ENTRY, "--host", "127.0.0.1", "--port", str(port),
    ]  # fmt: skip
    with _started(argv, port, directory, env):
        yield f"http://127.0.0.1:{port}/"


@contextlib.contextmanager
def moto_server(directory: Path) -> Iterator[str]:
    """moto's server (the Lambda and IAM APIs, in memory); yields its URL."""
    port = free_port()
    env = {"PATH": os.environ["PATH"], "LANG": "C.UTF-8", "HOME": str(directory)}
    argv = [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)]
    with _started(argv, port, directory, env):
        yield f"http://127.0.0.1:{port}"


def run_processes(workspaces: Path) -> list[str]:
    """Live processes of runs whose workspace was below ``workspaces`` (their ``HOME``)."""
    home = f"HOME={workspaces}/".encode()
    return processes_whose_environment(lambda environ: any(v.startswith(home) for v in environ))


async def leftovers_of(workspaces: Path) -> list[str]:
    """Workspaces and processes of runs left below ``workspaces``."""
    left = [str(p) for p in workspaces.iterdir()] + run_processes(workspaces)
    if left:  # a killed process may take a moment to disappear
        await anyio.sleep(0.5)
        left = [str(p) for p in workspaces.iterdir()] + run_processes(workspaces)
    return left


class ServerlessBehaviour(EnvironmentBehaviour):
    """The shared suite for an environment that invokes the executor without streaming its
    answer (Lambda), whose workspaces are made below ``self.workspaces``."""

    live_input = False  # a request carries its stdin whole: each module checks the refusal
    workspaces: Path

    async def leftovers(self, env: RunEnvironment) -> list[str]:
        return await leftovers_of(self.workspaces)

    async def test_cancelling_a_running_execute(self, env: RunEnvironment) -> None:
        # Output comes with the answer, so the suite's version (cancel once output arrives)
        # cannot apply: cancelled blind, the invocation runs on in the function to the run's
        # timeout, and keeps its place (the next execute waits for it rather than being sent
        # to an instance that is busy, which Lambda's emulator would not survive).
        with anyio.move_on_after(1) as scope:
            await env.execute("import time\ntime.sleep(60)", timeout=3)
        assert scope.cancelled_caught
        result = await env.execute("print('after')")
        assert result.stdout == "after\n", result
        with anyio.move_on_after(30):  # a run cancelled blind ends at its timeout
            while await self.leftovers(env):
                await anyio.sleep(0.2)
        assert await self.leftovers(env) == []
