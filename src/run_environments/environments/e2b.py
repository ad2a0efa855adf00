"""The E2B environment: code runs in an E2B cloud sandbox, through the official ``e2b`` SDK."""

from __future__ import annotations

import atexit
import contextlib
import os
import shlex
import signal
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from typing import Any

import anyio
import e2b
import httpx

from .._errors import (
    AuthenticationError,
    EnvironmentUnavailableError,
    RateLimitError,
    RunEnvironmentError,
    ServiceError,
    UnreachableError,
)
from .._languages import LANGUAGES
from .._process import Outcome
from .._remote import RemoteCalls, Sink, supervise_remote
from .._signals import BY_GO_NAME
from .base import CommandRunEnvironment, EnvironmentStatus
from .command import Command
from .workspace import Workspace

HOME = "/home/user"
KILL_WAIT = 2.0
"""Seconds to wait, after killing a command at its deadline, for its end and last output."""
SETTLE = 0.05
"""Seconds the SDK's HTTP client (pyqwest, on threads of its own Rust runtime) gets to finish
the callbacks of the last requests before the caller may shut the interpreter down: one that
arrives during finalization aborts the process (SIGABRT). Measured here against a local
envd: 7 of 30 runs of a script aborted with no pause, none of 30 with 10 ms."""

_USED: set[int] = set()
"""Environments that made a sandbox and were not cleaned up (by ``id``)."""


@atexit.register
def _settle_at_exit() -> None:
    """For an environment never cleaned up, the same pause before finalization."""
    if _USED:
        time.sleep(SETTLE)


def _translate(exc: BaseException) -> RunEnvironmentError:
    """The SDK's (and its transport's) errors as ours."""
    if isinstance(exc, e2b.AuthenticationException):
        return AuthenticationError(f"E2B refused the credentials: {exc}")
    if isinstance(exc, e2b.RateLimitException):
        return RateLimitError(f"E2B rate limit: {exc}")
    if isinstance(exc, e2b.SandboxNotFoundException | e2b.SandboxNotRunningException):
        return EnvironmentUnavailableError(f"the E2B sandbox is gone: {exc}")
    if isinstance(exc, httpx.TransportError | e2b.SandboxUnreachableException | OSError):
        return UnreachableError(f"E2B could not be reached: {exc}")
    return ServiceError(f"E2B: {exc}")


def _gone(exc: BaseException) -> bool:
    return isinstance(exc, e2b.SandboxNotFoundException | e2b.SandboxNotRunningException)


class E2BRunEnvironment(CommandRunEnvironment["E2BWorkspace"]):
    """Runs code in an E2B sandbox, created from ``template`` on first use and reused.

    :param template: the sandbox template.
    :param api_key: E2B's API key (default: ``$E2B_API_KEY``).
    :param domain: E2B's domain (default: the SDK's).
    :param debug: talk to a local envd (``runenv serve``) instead of the cloud.
    :param sandbox_url: where envd is (with ``debug``, default http://localhost:49983).
    :param request_timeout: seconds for each API request.
    :param lifetime: seconds the sandbox lives after its last use (E2B's sandbox timeout).
    :param metadata: metadata attached to the sandbox.
    :param internet: whether the sandbox may reach the internet.
    """

    name = "e2b"
    cwd_outside = ("/",)  # the sandbox is the cloud's: any directory in it
    file_roots = ("/tmp",)

    def __init__(
        self,
        template: str = "base",
        *,
        api_key: str | None = None,
        domain: str | None = None,
        debug: bool | None = None,
        sandbox_url: str | None = None,
        request_timeout: float | None = None,
        lifetime: int | None = None,
        metadata: dict[str, str] | None = None,
        internet: bool = True,
    ) -> None:
        super().__init__()
        self.template = template
        self._connection: dict[str, Any] = {
            k: v
            for k, v in {
                "api_key": api_key,
                "domain": domain,
                "debug": debug,
                "sandbox_url": sandbox_url,
                "request_timeout": request_timeout,
            }.items()
            if v is not None
        }
        self._creation: dict[str, Any] = {
            "timeout": lifetime,
            "metadata": metadata,
            "allow_internet_access": internet,
        }
        self._sandbox: e2b.AsyncSandbox | None = None
        self._lock = anyio.Lock()
        self._found: dict[str, str | None] = {}

    # -- the sandbox ----------------------------------------------------------------------
    def _credentials_problem(self) -> str | None:
        debug = self._connection.get("debug")
        if debug is None:
            debug = os.environ.get("E2B_DEBUG", "").lower() in ("1", "true")
        if debug or self._connection.get("api_key") or os.environ.get("E2B_API_KEY"):
            return None
        return "E2B_API_KEY is not set (pass api_key=, or debug=True for a local runenv serve)"

    async def sandbox(self) -> e2b.AsyncSandbox:
        """The sandbox, created on first use (and again after it died)."""
        problem = self._credentials_problem()
        if problem is not None:
            raise AuthenticationError(problem)
        async with self._lock:
            if self._sandbox is None:
                try:
                    self._sandbox = await e2b.AsyncSandbox.create(
                        self.template, **self._creation, **self._connection
                    )
                except Exception as exc:
                    raise _translate(exc) from exc
                self._toolchains.clear()
                self._found.clear()
                _USED.add(id(self))
            return self._sandbox

    @contextlib.asynccontextmanager
    async def _calls(self) -> AsyncIterator[e2b.AsyncSandbox]:
        """The sandbox, with SDK errors translated; a dead sandbox is dropped, so the next
        execute makes a new one."""
        sandbox = await self.sandbox()
        try:
            yield sandbox
        except RunEnvironmentError:
            raise
        except _CallbackError as exc:
            raise exc.error from None  # the caller's own exception, untouched
        except Exception as exc:
            if _gone(exc):
                self._sandbox = None
            raise _translate(exc) from exc

    async def cleanup(self) -> None:
        """Kill the sandbox (also after errors); the next execute makes a new one."""
        sandbox, self._sandbox = self._sandbox, None
        if sandbox is not None:
            with contextlib.suppress(Exception):
                await sandbox.kill()
            await anyio.sleep(SETTLE)  # see SETTLE
            _USED.discard(id(self))

    async def is_ready(self) -> bool:
        if self._credentials_problem() is not None:
            return False
        try:
            async with self._calls() as sandbox:
                await sandbox.commands.run("true", timeout=30)
        except RunEnvironmentError:
            return False
        return True

    async def status(self) -> EnvironmentStatus:
        problem = self._credentials_problem()
        if problem is None and not await self.is_ready():
            problem = "the E2B sandbox does not answer"
        if problem is not None:
            return EnvironmentStatus(name=self.name, ready=False, reason=problem)
        return await super().status()

    # -- the pipeline's parts -------------------------------------------------------------
    async def _which(self, program: str) -> str | None:
        if program == "{python}":
            return None
        if program not in self._found:
            await self._find_all(program)
        return self._found.get(program)

    async def _find_all(self, program: str) -> None:
        """Look every program of the language table up in one round trip."""
        names = sorted({a[0] for lang in LANGUAGES for a in (*lang.compile, *lang.run)
                        if not a[0].startswith("{")} | {program})  # fmt: skip
        script = "; ".join(f"command -v {shlex.quote(n)} || echo -" for n in names)
        async with self._calls() as sandbox:
            found = (await sandbox.commands.run(script)).stdout.split("\n")
        for name, path in zip(names, found, strict=False):
            self._found[name] = path.strip() if path.strip() not in ("", "-") else None

    async def _workspace(self) -> E2BWorkspace:
        path = f"{HOME}/runenv-{uuid.uuid4().hex[:12]}"
        async with self._calls() as sandbox:
            await sandbox.files.make_dir(path)
        return E2BWorkspace(path, self._calls)

    async def _run(self, command: Command, workspace: E2BWorkspace) -> Outcome:
        async with self._calls() as sandbox:
            return await supervise_remote(
                _remote_calls(sandbox, command), command, kill_wait=KILL_WAIT
            )


class E2BWorkspace(Workspace):
    """A directory in the E2B sandbox, reached through its files API.

    :param calls: gives the sandbox, with the SDK's errors translated.
    """

    def __init__(
        self,
        path: str,
        calls: Callable[[], contextlib.AbstractAsyncContextManager[e2b.AsyncSandbox]],
    ) -> None:
        super().__init__(path)
        self._calls = calls
        self._removed = False

    def _where(self, path: str) -> str:
        return path if path.startswith("/") else f"{self.path}/{path}"

    async def write(self, files: Mapping[str, bytes]) -> None:
        async with self._calls() as sandbox:
            for path, content in files.items():
                await sandbox.files.write(self._where(path), content)

    async def make_dir(self, relative: str) -> None:
        async with self._calls() as sandbox:
            await sandbox.files.make_dir(f"{self.path}/{relative}")

    async def read(self, paths: Sequence[str]) -> dict[str, bytes]:
        found = {}
        async with self._calls() as sandbox:
            for path in paths:
                try:
                    data = await sandbox.files.read(self._where(path), format="bytes")
                except e2b.SandboxException as exc:
                    if _gone(exc):
                        raise
                    continue  # missing, not a regular file, or out of reach
                found[path] = bytes(data)
        return found

    async def remove(self) -> None:
        if self._removed:
            return
        self._removed = True
        # The sandbox may be gone (then so is the directory): nothing to do.
        with anyio.CancelScope(shield=True), contextlib.suppress(RunEnvironmentError):
            async with self._calls() as sandbox:
                await sandbox.files.remove(self.path)


class _CallbackError(Exception):
    """An exception raised by the caller's output callback, carried through the SDK."""

    def __init__(self, error: BaseException) -> None:
        self.error = error
        super().__init__(str(error))


def _remote_calls(sandbox: e2b.AsyncSandbox, command: Command) -> RemoteCalls:
    """One command in the sandbox, as the remote supervisor drives it: the SDK's own
    background command, its output re-encoded to bytes, killed through the API."""
    handle: Any = None

    async def start(sink: Sink) -> None:
        nonlocal handle

        def forward(name: str) -> Callable[[str], Awaitable[None]]:
            async def take(text: str) -> None:
                try:
                    await sink(name, text.encode())
                except Exception as exc:  # the caller's own: carried through the SDK
                    raise _CallbackError(exc) from exc

            return take

        handle = await sandbox.commands.run(
            shlex.join(command.argv),
            background=True,
            envs=dict(command.env),
            cwd=command.cwd,
            stdin=command.stdin is not None,
            on_stdout=forward("stdout"),
            on_stderr=forward("stderr"),
            timeout=command.timeout + 60,
        )

    async def wait() -> tuple[int | None, str | None]:
        try:
            result = await handle.wait()
        except e2b.CommandExitException as exc:
            result = exc
        code, error = result.exit_code, result.error
        if code == -1 or (code is None and error):
            return None, _signal_name(error)
        return code, None

    async def kill() -> None:
        if handle is not None:
            with contextlib.suppress(e2b.SandboxException, httpx.HTTPError):
                await sandbox.commands.kill(handle.pid)

    async def feed(data: bytes) -> None:
        # a program may end without reading all of it: then it is not an error
        with contextlib.suppress(e2b.SandboxException):
            if data:
                await sandbox.commands.send_stdin(handle.pid, data)
            await sandbox.commands.close_stdin(handle.pid)

    async def send(data: bytes) -> None:
        with contextlib.suppress(e2b.SandboxException):
            await sandbox.commands.send_stdin(handle.pid, data)

    async def close() -> None:
        if handle is not None:  # its event stream: left open, the SDK's client threads
            with contextlib.suppress(Exception):  # call into an interpreter shutting down
                await handle.disconnect()

    return RemoteCalls(start=start, wait=wait, kill=kill, feed=feed, send=send, close=close)


def _signal_name(error: str | None) -> str:
    text = (error or "").removeprefix("signal: ").strip()
    if text in BY_GO_NAME:
        return BY_GO_NAME[text].name
    with contextlib.suppress(ValueError, KeyError):
        return signal.Signals[f"SIG{text.upper()}"].name
    return "SIGKILL"
