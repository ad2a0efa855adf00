"""Guest interpreters: each is a Node.js process running ``runner.mjs`` for one language,
under Node's permission model (it may read its own packages and nothing else, write nothing,
start no process or worker), and pools of them started ahead.

The frames on the process's standard input and output are described in ``runner.mjs``. A
process that is killed, or that served its run (unless the environment reuses
interpreters), is replaced: taking one from the pool starts its successor, which loads while
the taken one runs.
"""

from __future__ import annotations

import base64
import collections
import json
import os
import signal
import struct
import subprocess
import tempfile
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import anyio
import anyio.lowlevel
from anyio.abc import Process
from anyio.streams.buffered import BufferedByteReceiveStream

from ..._errors import EnvironmentUnavailableError
from ..._remote import RemoteCalls, Sink
from . import install

CHUNK = 64 << 10
"""The largest frame of standard input."""
READY_WAIT = 120.0
"""Seconds an interpreter may take to load (a cold Pyodide takes about three)."""


def permission_flags(node_path: str, snapshot: str | None = None) -> list[str]:
    """Node's options that confine a runner: its own files, the interpreters' packages (not
    ``ws``, Emscripten's way to open sockets) and the ``snapshot`` file readable, nothing
    writable, no child process, worker, addon or WASI, no code made from strings (the
    guest's JavaScript side gets no ``eval``)."""
    modules = install.modules()
    readable = [
        install.HERE,
        modules / "pyodide",
        modules / "quickjs-emscripten",
        modules / "quickjs-emscripten-core",
        modules / "@jitl",
    ]
    return [
        _permission_option(node_path),
        *(f"--allow-fs-read={path}/*" for path in readable),
        *([f"--allow-fs-read={snapshot}"] if snapshot else []),
        "--disallow-code-generation-from-strings",
        "--no-warnings",
        "--max-old-space-size=512",
    ]


def runner_env() -> dict[str, str]:
    """A runner's variables: none of this process's (``NODE_OPTIONS`` could lift the
    permission model; ``NODE_EXTRA_CA_CERTS`` makes Node's start three times slower)."""
    return {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LANG": "C.UTF-8"}


_PERMISSION: dict[str, str] = {}


def _permission_option(node_path: str) -> str:
    """``--permission`` where Node.js has it (22.13+), else its experimental name."""
    if node_path not in _PERMISSION:
        probe = subprocess.run(
            [node_path, "--permission", "-e", "0"], capture_output=True, timeout=30,
            env=runner_env(),
        )  # fmt: skip
        _PERMISSION[node_path] = (
            "--permission" if probe.returncode == 0 else "--experimental-permission"
        )
    return _PERMISSION[node_path]


class GuestError(EnvironmentUnavailableError):
    """An interpreter that failed to start or broke its protocol."""


class Interpreter:
    """One runner process: started, ready (its "R" frame), then serving runs."""

    def __init__(self, process: Process, stderr: Any) -> None:
        self.process = process
        self._stderr = stderr  # an unlinked file: Node's own messages, read on failure
        self._out = BufferedByteReceiveStream(process.stdout)  # type: ignore[arg-type]
        self._lock = anyio.Lock()
        self._ready = False
        self.used = False
        self.end: dict[str, Any] | None = None
        self.signalled: str | None = None

    @classmethod
    async def start(cls, argv: list[str]) -> Interpreter:
        stderr = tempfile.TemporaryFile()
        process = await anyio.open_process(
            argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=stderr,
            start_new_session=True, cwd="/", env=runner_env(),
        )  # fmt: skip
        return cls(process, stderr)

    @property
    def alive(self) -> bool:
        return self.process.returncode is None

    async def ready(self) -> None:
        """Wait until it has loaded its interpreter.

        :raises GuestError: if it ended or said something else first.
        """
        if self._ready:
            return
        with anyio.move_on_after(READY_WAIT):
            frame = await self._frame()
            if frame is not None and frame[0] == b"R":
                self._ready = True
                return
        await self.close()
        raise GuestError(f"the WebAssembly interpreter did not start: {self.diagnostics()}")

    def diagnostics(self) -> str:
        """What Node.js printed (its end), or its exit status."""
        self._stderr.seek(0)
        text = self._stderr.read()[-2000:].decode("utf-8", "replace").strip()
        return text or f"exit status {self.process.returncode}"

    async def _frame(self) -> tuple[bytes, bytes] | None:
        try:
            head = await self._out.receive_exactly(5)
            (size,) = struct.unpack(">I", head[1:])
            return head[:1], await self._out.receive_exactly(size)
        except (
            anyio.EndOfStream,
            anyio.IncompleteRead,
            anyio.BrokenResourceError,
            anyio.ClosedResourceError,
        ):
            return None

    async def _send(self, kind: bytes, body: bytes = b"") -> None:
        """One frame, whole even when the caller is cancelled (the runner reads on); a
        caller cancelled before it starts sends nothing."""
        await anyio.lowlevel.checkpoint()
        with anyio.CancelScope(shield=True):
            async with self._lock:
                assert self.process.stdin is not None
                await self.process.stdin.send(kind + struct.pack(">I", len(body)) + body)

    async def feed(self, data: bytes, end: bool) -> None:
        """Standard input, in frames; ``end``: then its end."""
        try:
            for start in range(0, len(data), CHUNK):
                await self._send(b"i", data[start : start + CHUNK])
            if end:
                await self._send(b"i")
        except (anyio.BrokenResourceError, anyio.ClosedResourceError):
            pass  # it ended: what it did not read is dropped, as a pipe would drop it

    def calls(self, request: Mapping[str, Any]) -> RemoteCalls:
        """How :func:`~run_environments._remote.supervise_remote` drives one run."""
        self.used = True

        async def start(sink: Sink) -> None:
            self._sink = sink
            await self._send(b"q", json.dumps(request).encode())

        async def signal_(number: int) -> None:
            self.signalled = signal.Signals(number).name
            await self.kill()

        return RemoteCalls(
            start=start,
            wait=self._wait,
            kill=self.kill,
            feed=lambda data: self.feed(data, end=True),
            send=lambda data: self.feed(data, end=False),
            signal=signal_,
        )

    async def _wait(self) -> tuple[int | None, str | None]:
        names = {b"o": "stdout", b"e": "stderr"}
        while self.end is None:
            frame = await self._frame()
            if frame is None:
                break
            if frame[0] in names:
                await self._sink(names[frame[0]], frame[1])
            elif frame[0] == b"x":
                self.end = json.loads(frame[1])
        if self.end is not None and not self.end["oom"]:
            return self.end["code"], None
        if self.end is None:
            await self.process.wait()
        code = self.process.returncode
        if self.signalled is not None:
            return None, self.signalled
        if self.end is not None or code is None or code < 0:
            return None, "SIGKILL"  # killed, or out of memory (ended at the refusal)
        return code, None

    async def fetch(self, paths: list[str]) -> dict[str, bytes]:
        """The regular files at ``paths`` in the run's file system, from a runner whose
        run ended (none from one that was killed)."""
        if self.end is None or not self.alive:
            return {}
        await self._send(b"r", json.dumps(paths).encode())
        while (frame := await self._frame()) is not None:
            if frame[0] == b"F":
                return {k: base64.b64decode(v) for k, v in json.loads(frame[1]).items()}
        return {}

    async def forget(self, root: str) -> None:
        """Remove a run's files, for the next run of a reused interpreter."""
        self.end = None
        self.signalled = None
        await self._send(b"d", root.encode())

    async def kill(self) -> None:
        """Kill it (SIGKILL: a guest in a busy loop never looks at anything gentler) and
        reap it."""
        with anyio.CancelScope(shield=True):
            if self.process.returncode is None:
                try:
                    self.process.kill()
                except ProcessLookupError:
                    pass
            await self.process.wait()

    async def close(self) -> None:
        """Kill it and release its pipes."""
        await self.kill()
        with anyio.CancelScope(shield=True):
            await self.process.aclose()
        self._stderr.close()

    def kill_now(self) -> None:
        """Kill it without an event loop (one that ended); the kernel's parent reaps."""
        try:
            os.kill(self.process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


class Pool:
    """Runners of one language started ahead: ``size`` wait, loaded; at most ``limit`` are
    in use at once (each holds a whole interpreter's memory)."""

    def __init__(self, start: Callable[[], Awaitable[Interpreter]], size: int, limit: int):
        self._start = start
        self.size = size
        self.idle: collections.deque[Interpreter] = collections.deque()
        self.busy: set[Interpreter] = set()
        self._limiter = anyio.CapacityLimiter(limit)
        self._tokens: dict[Interpreter, object] = {}

    async def take(self) -> Interpreter:
        """A loaded runner, for one caller until :meth:`give_back` or :meth:`discard`."""
        token = object()
        await self._limiter.acquire_on_behalf_of(token)
        interpreter = None
        try:
            while self.idle and not self.idle[0].alive:
                await self.idle.popleft().close()
            interpreter = self.idle.popleft() if self.idle else await self._start()
            self._tokens[interpreter] = token
            self.busy.add(interpreter)
            await self.fill()
            await interpreter.ready()
        except BaseException:
            if interpreter is None:
                self._limiter.release_on_behalf_of(token)
            else:
                await self.discard(interpreter)
            raise
        return interpreter

    async def fill(self) -> None:
        """Start runners until ``size`` wait (they load while the caller's runs)."""
        while len(self.idle) < self.size:
            self.idle.append(await self._start())

    async def discard(self, interpreter: Interpreter) -> None:
        """Kill a runner that served (or broke) and free its place."""
        try:
            await interpreter.close()
        finally:
            self._release(interpreter)

    def give_back(self, interpreter: Interpreter) -> None:
        """Keep a runner for the next run (interpreters reused on purpose)."""
        self._release(interpreter)
        self.idle.appendleft(interpreter)

    def _release(self, interpreter: Interpreter) -> None:
        if interpreter in self.busy:
            self.busy.discard(interpreter)
            self._limiter.release_on_behalf_of(self._tokens.pop(interpreter))

    async def close(self) -> None:
        """Kill every runner, waiting or in use."""
        for interpreter in [*self.idle, *self.busy]:
            await interpreter.close()
        self.idle.clear()

    def abandon(self) -> None:
        """Kill every runner of an event loop that ended."""
        for interpreter in [*self.idle, *self.busy]:
            interpreter.kill_now()
        self.idle.clear()
        self.busy.clear()
