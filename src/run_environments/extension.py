"""What an environment of your own is built from (see docs/writing-an-environment.md).

:class:`CommandRunEnvironment` does everything but *where* commands run: a subclass finds
programs (``_which``), makes a workspace (``_workspace``, ``_write``, ``_fetch``) and runs one
command (``_run``) to an :class:`Outcome`; the shared pipeline gives ``_run`` a frozen
:class:`Command` (argv, resolved working directory, environment, standard input, limits,
output bound, callbacks, one absolute deadline). The helpers below are the ones the built-in
environments use for processes and workspaces on this machine.
"""

from __future__ import annotations

from ._process import Outcome, ProcessGroups, run_process
from ._workspace import make_dirs, temporary_directory, write_files
from .environments.base import CommandRunEnvironment, Workspace, fetch_from_host
from .environments.command import Command, program_env

__all__ = [
    "Command",
    "CommandRunEnvironment",
    "Outcome",
    "ProcessGroups",
    "Workspace",
    "fetch_from_host",
    "make_dirs",
    "program_env",
    "run_process",
    "temporary_directory",
    "write_files",
]
