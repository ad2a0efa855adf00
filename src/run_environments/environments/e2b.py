"""The E2B environment: code runs in an E2B cloud sandbox, through the official ``e2b`` SDK."""

from __future__ import annotations

import contextlib
import os
import shlex
import signal
import time
import uuid
from collections.abc import AsyncIterator, Sequence
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
from .._models import deliver
from .._process import Outcome
from .._signals import BY_GO_NAME
from .base import CommandRunEnvironment, EnvironmentStatus, Workspace
from .command import Command

HOME = "/home/user"
KILL_WAIT = 2.0
"""Seconds to wait, after killing a command at its deadline, for its end and last output."""


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


class E2BRunEnvironment(CommandRunEnvironment):
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

    @contextlib.asynccontextmanager
    async def _workspace(self) -> AsyncIterator[Workspace]:
        path = f"{HOME}/runenv-{uuid.uuid4().hex[:12]}"
        async with self._calls() as sandbox:
            await sandbox.files.make_dir(path)
        try:
            yield Workspace(path)
        finally:
            with anyio.CancelScope(shield=True), contextlib.suppress(Exception):
                async with self._calls() as sandbox:
                    await sandbox.files.remove(path)

    async def _write(self, workspace: Workspace, files: dict[str, bytes]) -> None:
        async with self._calls() as sandbox:
            for relative, content in files.items():
                await sandbox.files.write(f"{workspace.path}/{relative}", content)

    async def _fetch(self, workspace: Workspace, paths: Sequence[str]) -> dict[str, bytes]:
        found = {}
        async with self._calls() as sandbox:
            for relative in paths:
                try:
                    data = await sandbox.files.read(f"{workspace.path}/{relative}", format="bytes")
                except e2b.NotFoundException:
                    continue
                except e2b.SandboxException:
                    continue  # not a regular file, or out of reach
                found[relative] = bytes(data)
        return found

    async def _run(self, command: Command, workspace: Workspace) -> Outcome:
        run = _Run(command)
        async with self._calls() as sandbox:
            if command.directory is not None:
                await sandbox.files.make_dir(command.cwd)
            return await run.execute(sandbox)


class _CallbackError(Exception):
    """An exception raised by the caller's output callback, carried through the SDK."""

    def __init__(self, error: BaseException) -> None:
        self.error = error
        super().__init__(str(error))


class _Run:
    """One command in the sandbox, with its output bounded and its time limited."""

    def __init__(self, command: Command) -> None:
        self.command = command
        self.out = bytearray()
        self.err = bytearray()
        self.truncated = {"stdout": False, "stderr": False}
        self.handle: Any = None

    async def take(self, name: str, text: str) -> None:
        buffer = self.out if name == "stdout" else self.err
        data = text.encode()
        room = self.command.max_output_bytes - len(buffer)
        if len(data) > room:
            data = data[: max(room, 0)]
            self.truncated[name] = True
            if self.handle is not None:
                with contextlib.suppress(Exception):
                    await self.handle.kill()
        buffer += data
        callback = getattr(self.command, f"on_{name}")
        if callback is not None and data:
            try:
                await deliver(callback, data.decode("utf-8", "replace"))
            except Exception as exc:
                raise _CallbackError(exc) from exc

    async def execute(self, sandbox: e2b.AsyncSandbox) -> Outcome:
        command = self.command
        stdin = command.stdin
        started = time.perf_counter()
        timed_out = False
        code: int | None = None
        error: str | None = None
        self.handle = await sandbox.commands.run(
            shlex.join(command.argv),
            background=True,
            envs=dict(command.env),
            cwd=command.cwd,
            stdin=stdin is not None,
            on_stdout=lambda text: self.take("stdout", text),
            on_stderr=lambda text: self.take("stderr", text),
            timeout=command.timeout + 60,
        )
        finished = anyio.Event()
        ended: dict[str, Any] = {}

        async def wait() -> None:
            try:
                ended["result"] = await self.handle.wait()
            except e2b.CommandExitException as exc:
                ended["result"] = exc
            except BaseException as exc:
                ended["error"] = exc
            finally:
                finished.set()

        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(wait)
                if stdin is not None:
                    # a program may end without reading all of it: then it is not an error
                    with contextlib.suppress(e2b.SandboxException):
                        if stdin:
                            await sandbox.commands.send_stdin(self.handle.pid, stdin)
                        await sandbox.commands.close_stdin(self.handle.pid)
                with anyio.move_on_after(command.remaining()):
                    await finished.wait()
                if not finished.is_set():
                    timed_out = True
                    await self._stop(sandbox)
                with anyio.move_on_after(KILL_WAIT):  # for the output the kill lets through
                    await finished.wait()
                tg.cancel_scope.cancel()
        except BaseException:
            with anyio.CancelScope(shield=True):
                await self._stop(sandbox)
            raise
        if "error" in ended:
            with anyio.CancelScope(shield=True):
                await self._stop(sandbox)
            raise ended["error"]
        result = ended.get("result")
        if result is not None:
            code, error = result.exit_code, result.error
        name = None
        if code == -1 or (code is None and error):
            name = _signal_name(error)
            code = None
        if timed_out:
            code, name = None, "SIGKILL"
        return Outcome(
            exit_code=code,
            signal=name,
            timed_out=timed_out,
            stdout=bytes(self.out),
            stderr=bytes(self.err),
            stdout_truncated=self.truncated["stdout"],
            stderr_truncated=self.truncated["stderr"],
            duration=time.perf_counter() - started,
        )

    async def _stop(self, sandbox: e2b.AsyncSandbox) -> None:
        with contextlib.suppress(Exception):
            await sandbox.commands.kill(self.handle.pid)


def _signal_name(error: str | None) -> str:
    text = (error or "").removeprefix("signal: ").strip()
    if text in BY_GO_NAME:
        return BY_GO_NAME[text].name
    with contextlib.suppress(ValueError, KeyError):
        return signal.Signals[f"SIG{text.upper()}"].name
    return "SIGKILL"
