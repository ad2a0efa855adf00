"""A run environment of one's own: programs run on this machine at the lowest CPU priority,
so that a batch of snippets never slows the machine's other work."""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
from collections.abc import AsyncIterator, Sequence

from run_environments.extension import (
    Command,
    CommandRunEnvironment,
    Outcome,
    ProcessGroups,
    Workspace,
    fetch_from_host,
    make_dirs,
    run_process,
    temporary_directory,
    write_files,
)


class NiceRunEnvironment(CommandRunEnvironment):
    """Runs code as child processes at niceness 19, each run in a directory of its own."""

    name = "nice"

    def __init__(self, tmp_dir: str | None = None) -> None:
        super().__init__()
        self.tmp_dir = tmp_dir
        self._groups = ProcessGroups()  # what is running, to kill it all in cleanup()

    async def _which(self, program: str) -> str | None:
        return sys.executable if program == "{python}" else shutil.which(program)

    @contextlib.asynccontextmanager
    async def _workspace(self) -> AsyncIterator[Workspace]:
        async with temporary_directory(self.tmp_dir) as path:
            yield Workspace(path, host=path)

    async def _write(self, workspace: Workspace, files: dict[str, bytes]) -> None:
        write_files(workspace.path, files)

    async def _fetch(self, workspace: Workspace, paths: Sequence[str]) -> dict[str, bytes]:
        return await fetch_from_host(workspace, paths)

    async def _run(self, command: Command, workspace: Workspace) -> Outcome:
        if command.directory is not None:  # a cwd inside the workspace
            make_dirs(workspace.path, command.directory)
        env = {**os.environ, **command.env}
        return await run_process(
            ["nice", "-n", "19", *command.argv],
            cwd=command.cwd,
            env={os.fsencode(k): os.fsencode(v) for k, v in env.items()},
            timeout=command.remaining(),  # the stage's deadline, fixed when it began
            stdin=command.stdin,
            max_output_bytes=command.max_output_bytes,
            on_stdout=command.on_stdout,
            on_stderr=command.on_stderr,
            groups=self._groups,
        )

    def running(self) -> int:
        """How many runs are under way."""
        return len(self._groups)

    async def cleanup(self) -> None:
        self._groups.kill_all()
