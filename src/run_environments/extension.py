"""What an environment of your own is built from (see docs/writing-an-environment.md).

:class:`CommandRunEnvironment` does everything but *where* commands run: a subclass finds
programs (``_which``), makes a :class:`Workspace` for each execution (``_workspace``: an
object that writes, reads and removes its files; :class:`HostWorkspace` is a directory on
this machine) and runs one command (``_run``) to an :class:`Outcome`; the shared pipeline
gives ``_run`` a frozen :class:`Command` (argv, resolved working directory, environment,
standard input, limits, output bound, callbacks, one absolute deadline). For processes that
are not children of this one (a container, a remote shell, a cloud API), :func:`supervise_remote`
drives :class:`RemoteCalls` to the same outcome. The other helpers are the ones the built-in
environments use for processes on this machine.
"""

from __future__ import annotations

from ._process import Outcome, ProcessGroups, run_process
from ._remote import RemoteCalls, supervise_remote
from .environments.base import CommandRunEnvironment
from .environments.command import Command, program_env
from .environments.workspace import HostWorkspace, Workspace

__all__ = [
    "Command",
    "CommandRunEnvironment",
    "HostWorkspace",
    "Outcome",
    "ProcessGroups",
    "RemoteCalls",
    "Workspace",
    "program_env",
    "run_process",
    "supervise_remote",
]
