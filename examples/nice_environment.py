"""A run environment of one's own: programs run on this machine at the lowest CPU priority,
so that a batch of snippets never slows the machine's other work."""

from __future__ import annotations

import os
import shutil
import sys

from run_environments.extension import (
    Command,
    CommandRunEnvironment,
    HostWorkspace,
    Outcome,
    ProcessGroups,
    run_process,
)


class NiceRunEnvironment(CommandRunEnvironment[HostWorkspace]):
    """Runs code as child processes at niceness 19, each run in a directory of its own."""

    name = "nice"

    def __init__(self, tmp_dir: str | None = None) -> None:
        super().__init__()
        self.tmp_dir = tmp_dir
        self._groups = ProcessGroups()  # what is running, to kill it all in cleanup()

    async def _which(self, program: str) -> str | None:
        return sys.executable if program == "{python}" else shutil.which(program)

    async def _workspace(self) -> HostWorkspace:
        return HostWorkspace.create(self.tmp_dir)  # a fresh directory on this machine

    async def _run(self, command: Command, workspace: HostWorkspace) -> Outcome:
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
        await self._remove_workspaces()  # of runs cancelled half-way
