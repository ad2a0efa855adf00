"""The local environment: code runs as a plain child process, with the caller's permissions."""

from __future__ import annotations

import itertools
import os
import shutil
import sys
import uuid

from .._errors import InvalidOptionsError
from .._offload import off_loop
from .._process import Outcome, ProcessGroups, kill_marked, run_process
from .base import CommandRunEnvironment
from .command import Command
from .workspace import HostWorkspace

MARKER = "RUNENV_RUN"
"""Set in every program's environment, so that descendants that escaped are found."""


class LocalRunEnvironment(CommandRunEnvironment[HostWorkspace]):
    """Runs code as a plain local subprocess. Fast, and not isolated: use it for trusted code.

    :param inherit_env: start from this process's environment (the default) or, when false,
        from a clean one with only ``PATH``, ``LANG`` and ``HOME`` (the workspace).
    :param tmp_dir: where workspaces are made (default: ``$RUNENV_TMPDIR``, else a
        memory-backed file system such as ``/dev/shm`` when writable, else the system's temp
        directory).
    :param kill_grace: seconds between SIGTERM and SIGKILL when a run is stopped.
    :param path: where interpreters and compilers are looked for (default: ``$PATH``).
    :param python: the Python interpreter (default: the one running this package).
    :param kill_leftovers: kill every process a run started when the run ends, daemons that
        left its process group included (by default only a run that was stopped is swept
        so; a run that ends by itself has its process group killed).
    """

    name = "local"
    cwd_outside = ("/",)  # not isolated: any directory of this machine

    def __init__(
        self,
        *,
        inherit_env: bool = True,
        tmp_dir: str | None = None,
        kill_grace: float = 0.5,
        path: str | None = None,
        python: str | None = None,
        kill_leftovers: bool = False,
    ) -> None:
        super().__init__()
        self._inherit_env = inherit_env
        self._tmp_dir = tmp_dir
        self._kill_grace = kill_grace
        self._groups = ProcessGroups()
        self.instance = uuid.uuid4().hex
        """Every program this environment starts has ``RUNENV_RUN`` set to a value that
        begins with it (so that escaped descendants are found)."""
        self._runs = itertools.count()
        self._path = path if path is not None else os.environ.get("PATH", os.defpath)
        self._python = python or sys.executable or None
        self._kill_leftovers = kill_leftovers

    async def _which(self, program: str) -> str | None:
        if program == "{python}":
            usable = self._python is not None and os.access(self._python, os.X_OK)
            return self._python if usable else None
        return shutil.which(program, path=self._path)

    async def _workspace(self) -> HostWorkspace:
        return HostWorkspace.create(self._tmp_dir)

    def _environment(self, workspace: HostWorkspace, command: Command) -> dict[bytes, bytes]:
        # Bytes throughout: the child gets bytes anyway, and decoding os.environ to
        # encode it again is a measurable part of starting a small program.
        if self._inherit_env:
            env = _host_environment()
        else:
            env = {b"PATH": os.fsencode(self._path), b"LANG": b"C.UTF-8"}
            env[b"HOME"] = os.fsencode(workspace.path)
        env.update((os.fsencode(k), os.fsencode(v)) for k, v in command.env.items())
        return env

    async def _run(self, command: Command, workspace: HostWorkspace) -> Outcome:
        outside = command.directory is None and command.cwd != workspace.path
        if outside and not await off_loop(os.path.isdir, command.cwd):
            raise InvalidOptionsError(f"cwd {command.cwd!r} is not a directory")
        env = self._environment(workspace, command)
        run_id = f"{self.instance}.{next(self._runs)}"
        env[MARKER.encode()] = run_id.encode()
        stopped = True
        try:
            outcome = await run_process(
                command.argv,
                cwd=command.cwd,
                env=env,
                timeout=command.remaining(),
                stdin=command.stdin,
                max_output_bytes=command.max_output_bytes,
                on_stdout=command.on_stdout,
                on_stderr=command.on_stderr,
                kill_grace=self._kill_grace,
                groups=self._groups,
            )
            stopped = outcome.timed_out or self._kill_leftovers
            return outcome
        finally:
            if stopped:
                kill_marked(MARKER, run_id)

    async def cleanup(self) -> None:
        """Kill every program this environment started and remove every workspace left."""
        self._groups.kill_all()
        kill_marked(MARKER, self.instance)
        await self._remove_workspaces()


def _host_environment() -> dict[bytes, bytes]:
    """A copy of this process's environment as bytes."""
    data = getattr(os.environ, "_data", None)  # CPython keeps it as bytes: copy it directly
    if isinstance(data, dict):
        return dict(data)
    return dict(os.environb)
