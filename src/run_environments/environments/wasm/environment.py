"""``WasmRunEnvironment``: code in WebAssembly interpreters (Pyodide, QuickJS), isolated by
WebAssembly itself rather than by kernel features."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import os
import posixpath
import secrets
import shutil
import time
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import anyio

from ..._errors import EnvironmentUnavailableError
from ..._languages import Language, Toolchain, resolve
from ..._models import Limits
from ..._process import Outcome
from ..._remote import supervise_remote
from ..base import CommandRunEnvironment, EnvironmentStatus
from ..command import Command
from ..workspace import Workspace
from . import install
from .interpreter import GuestError, Interpreter, Pool, permission_flags

RUNTIMES = {"python": "pyodide", "javascript": "quickjs"}
"""The languages served, and the interpreter each runs in (the program a toolchain names)."""
BASE_ENV = {"HOME": "/home/runenv", "PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"}
"""The variables every guest sees, under the run's own."""


class WasmWorkspace(Workspace):
    """A run's files in its interpreter's virtual file system: written with the run's
    request, read back from the runner before it is released."""

    def __init__(self, path: str) -> None:
        super().__init__(path)
        self.files: dict[str, bytes] = {}
        self.dirs: list[str] = []
        self.interpreter: Interpreter | None = None
        self.pool: Pool | None = None
        self.keep = False

    def _absolute(self, path: str) -> str:
        return path if path.startswith("/") else posixpath.join(self.path, path)

    async def write(self, files: Mapping[str, bytes]) -> None:
        self.files.update({self._absolute(p): data for p, data in files.items()})

    async def make_dir(self, relative: str) -> None:
        self.dirs.append(self._absolute(relative))

    async def read(self, paths: Sequence[str]) -> dict[str, bytes]:
        if self.interpreter is None:
            return {}
        found = await self.interpreter.fetch([self._absolute(p) for p in paths])
        return {p: found[self._absolute(p)] for p in paths if self._absolute(p) in found}

    async def remove(self) -> None:
        interpreter, pool, self.interpreter = self.interpreter, self.pool, None
        if interpreter is None or pool is None:
            return
        with anyio.CancelScope(shield=True):
            ended = interpreter.end is not None and not interpreter.end["oom"]
            if self.keep and ended and interpreter.alive:
                await interpreter.forget(self.path)
                pool.give_back(interpreter)
            else:
                await pool.discard(interpreter)


class WasmRunEnvironment(CommandRunEnvironment[WasmWorkspace]):
    """Runs Python in Pyodide and JavaScript in QuickJS, each in a WebAssembly interpreter
    in a Node.js process confined by Node's permission model.

    The guest sees a virtual file system holding its workspace (``files`` and
    ``fetch_files`` work), no host file, no network, no subprocess, no thread. Every run
    gets a fresh interpreter: ``pool`` of them per language wait, loaded (Pyodide from a
    memory snapshot), and each is used once and replaced while the next run goes on.

    :param pool: interpreters started ahead per language.
    :param reuse: serve runs one after another in the same interpreter (a run's globals
        are its own, but modules it imported or changed stay for the next): the fastest
        way, for trusted code only.
    :param max_interpreters: interpreters of one language running at once (more runs wait).
    :param memory: the memory limit of a run that sets none (bytes of WebAssembly memory).
    """

    name: ClassVar[str] = "wasm"
    file_roots: ClassVar[tuple[str, ...]] = ("/tmp", "/mnt")

    def __init__(
        self,
        *,
        pool: int = 2,
        reuse: bool = False,
        max_interpreters: int | None = None,
        memory: int = 1 << 30,
    ) -> None:
        super().__init__()
        self.pool_size = pool
        self.reuse = reuse
        self.max_interpreters = max_interpreters or max(4, 2 * (os.cpu_count() or 1))
        self.memory = memory
        self._pools: dict[str, Pool] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._node: tuple[str | None, str | None] | None = None

    # -- what runs here -------------------------------------------------------------------
    def _node_path(self) -> str:
        if self._node is None:
            self._node = install.node()
        path, why = self._node
        if path is None:
            raise EnvironmentUnavailableError(f"the wasm environment needs Node.js: {why}")
        return path

    async def _which(self, program: str) -> str | None:
        return None  # languages resolve through RUNTIMES (see _toolchain)

    async def _toolchain(self, language: Language) -> Toolchain | str:
        if language.name not in self._toolchains:
            self._toolchains[language.name] = await anyio.to_thread.run_sync(
                self._resolve, language
            )
        return self._toolchains[language.name]

    def _resolve(self, language: Language) -> Toolchain | str:
        runtime = RUNTIMES.get(language.name)
        if runtime is None:
            return (
                "the wasm environment runs python (Pyodide) and javascript (QuickJS) only: "
                f"{language.name} needs a native toolchain or a subprocess (use sandbox)"
            )
        path, why = self._node if self._node is not None else install.node()
        self._node = (path, why)
        if path is None:
            return why or "no Node.js"
        if (reason := install.missing(language.name)) is not None:
            return reason
        first = language.run[0]
        return resolve(
            dataclasses.replace(language, run=((runtime, *first[1:]),)),
            lambda name: name if name == runtime else None,
        )

    async def status(self) -> EnvironmentStatus:
        status = await super().status()
        path, version = self._node if self._node is not None else (None, None)
        notes: tuple[str, ...] = (f"Node.js {version} at {path}",) if path else ()
        if status.ready:
            notes += (f"packages in {install.modules().parent}",)
        return dataclasses.replace(status, notes=notes)

    # -- runs -----------------------------------------------------------------------------
    async def _workspace(self) -> WasmWorkspace:
        return WasmWorkspace(f"/workspace/{secrets.token_hex(6)}")

    def _pools_here(self) -> dict[str, Pool]:
        """The pools of this event loop (those of a loop that ended are killed)."""
        loop = asyncio.get_running_loop()
        if self._loop is not loop:
            for pool in self._pools.values():
                pool.abandon()
            self._pools, self._loop = {}, loop
        return self._pools

    async def _pool(self, runtime: str) -> Pool:
        pools = self._pools_here()
        if runtime not in pools:
            node = self._node_path()
            language = "python" if runtime == "pyodide" else "javascript"
            snapshot = ""
            if runtime == "pyodide":
                making = await anyio.to_thread.run_sync(permission_flags, node)
                made = await anyio.to_thread.run_sync(install.snapshot, node, making)
                snapshot = str(made)
            flags = await anyio.to_thread.run_sync(permission_flags, node, snapshot)
            argv = [
                *_dies_with_parent(),
                node, *flags, str(install.RUNNER), language, str(install.modules()), snapshot,
            ]  # fmt: skip

            async def start() -> Interpreter:
                return await Interpreter.start(argv)

            pools.setdefault(runtime, Pool(start, self.pool_size, self.max_interpreters))
        return pools[runtime]

    async def _run(self, command: Command, workspace: WasmWorkspace) -> Outcome:
        pool = await self._pool(command.argv[0])
        try:
            interpreter = await pool.take()
        except GuestError as exc:
            raise EnvironmentUnavailableError(str(exc)) from exc
        workspace.interpreter, workspace.pool, workspace.keep = interpreter, pool, self.reuse
        # The run's clock starts with a loaded interpreter: loading one (a tenth of a second,
        # far more on a busy machine) is the environment's start-up, bounded on its own.
        cpu = command.limits.cpu_time
        budget = command.timeout if cpu is None else min(command.timeout, cpu)
        command = dataclasses.replace(command, deadline=time.monotonic() + budget)
        request = self._request(command, workspace, command.limits)
        outcome = await supervise_remote(interpreter.calls(request), command, kill_wait=2.0)
        end: dict[str, Any] = interpreter.end or {}
        if cpu is not None and outcome.timed_out and cpu < command.timeout:
            # one thread: its CPU time is its run time
            outcome = dataclasses.replace(outcome, timed_out=False, signal="SIGXCPU")
        return dataclasses.replace(
            outcome,
            oom_killed=bool(end.get("oom")),
            memory_peak=end.get("memory_peak"),
            cpu_time=end.get("cpu_time"),
        )

    def _request(
        self, command: Command, workspace: WasmWorkspace, limits: Limits
    ) -> dict[str, Any]:
        return {
            "argv": list(command.argv[1:]),
            "cwd": command.cwd,
            "env": {**BASE_ENV, **command.env},
            "files": {p: base64.b64encode(d).decode() for p, d in workspace.files.items()},
            "dirs": [workspace.path, *workspace.dirs],
            "memory": limits.memory if limits.memory is not None else self.memory,
        }

    async def cleanup(self) -> None:
        await self._remove_workspaces()
        pools, self._pools = self._pools, {}
        for pool in pools.values():
            await pool.close()

    def interpreters(self) -> list[int]:
        """The process ids of the runners this environment has (waiting or in use)."""
        return [
            i.process.pid
            for pool in self._pools.values()
            for i in (*pool.idle, *pool.busy)
            if i.alive
        ]

    def busy(self) -> list[int]:
        """The process ids of runners in use by a run."""
        return [i.process.pid for p in self._pools.values() for i in p.busy if i.alive]


def _dies_with_parent() -> list[str]:
    """A prefix that kills a runner when this process ends, however it ends (a runner in a
    busy guest never reads the end of its input): util-linux's ``setpriv`` where there is
    one; elsewhere a runner ends when it next reads its closed input."""
    setpriv = shutil.which("setpriv")
    return [setpriv, "--pdeathsig", "KILL"] if setpriv else []
