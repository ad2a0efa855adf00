"""One command of an execution, decided once by the shared pipeline.

Timeouts: a stage (the compile step, then the run) has ``timeout`` seconds of wall-clock time
from the moment the pipeline hands its command to the environment: finding or starting a
sandbox, a container or a connection, sending standard input and running the program all
count. At the deadline the program gets SIGTERM, the environment's ``kill_grace``, then
SIGKILL, and the result says ``timed_out``; the grace is the only time past the deadline.
"""

from __future__ import annotations

import math
import os
import posixpath
import time
from collections.abc import Mapping
from dataclasses import dataclass

from .._errors import InvalidOptionsError
from .._languages import Language
from .._live import LiveInput
from .._models import ExecutionOptions, Limits, OutputCallback, check_relative_path


@dataclass(frozen=True, kw_only=True)
class Command:
    """Everything about one command: what runs, where, with what, and until when.

    :param argv: the program and its arguments.
    :param cwd: the working directory as the program sees it.
    :param directory: ``cwd`` relative to the workspace when it is inside it (the
        environment makes it before the command runs); None for the workspace itself or a
        directory outside it.
    :param env: the variables the command adds to the environment's own.
    :param stdin: bytes for standard input, input written while the program runs, or None
        for none (end of file at once).
    :param callbacks: output callbacks (none for a compile step).
    :param deadline: ``time.monotonic()`` by which the command must be over.
    """

    argv: tuple[str, ...]
    cwd: str
    directory: str | None
    env: Mapping[str, str]
    stdin: bytes | LiveInput | None
    limits: Limits
    max_output_bytes: int
    on_stdout: OutputCallback | None
    on_stderr: OutputCallback | None
    timeout: float
    deadline: float
    compile: bool

    def remaining(self) -> float:
        """Seconds left until the deadline (never negative)."""
        return max(self.deadline - time.monotonic(), 0.0)


def resolve_cwd(root: str, cwd: str | None, outside: tuple[str, ...]) -> tuple[str, str | None]:
    """The working directory for ``cwd``, under the one rule every environment follows: none
    is the workspace ``root``; a relative path, or an absolute one inside ``root``, is inside
    the workspace (made there); another absolute path only below one of ``outside``.

    :returns: the directory as the program sees it, and its path relative to ``root`` when
        it is inside the workspace.
    :raises InvalidOptionsError: for an absolute path the environment does not allow.
    """
    if cwd is None:
        return root, None
    if posixpath.isabs(cwd):
        normal = posixpath.normpath(cwd)
        if normal == root:
            return root, None
        if not normal.startswith(root.rstrip("/") + "/"):
            if any(normal == p or normal.startswith(p.rstrip("/") + "/") for p in outside):
                return normal, None
            allowed = " or ".join([root, *outside]) if outside else root
            raise InvalidOptionsError(f"cwd must be inside {allowed} here, not {cwd!r}")
        cwd = normal[len(root.rstrip("/")) + 1 :]
    relative = check_relative_path(cwd)
    return posixpath.join(root, relative), relative


def program_env(language: Language, options: ExecutionOptions, stream: bool) -> dict[str, str]:
    """The variables a run adds to its environment's own: ``options.env``, over the
    language's unbuffered-output variables when output streams to callbacks.

    A compile step (``stream`` false) adds nothing: ``options.env`` is the program's, and in
    a compiler it could run code the client sent (``LD_PRELOAD``, ``JAVA_TOOL_OPTIONS``,
    ``GOFLAGS=-toolexec=...``, ``NODE_OPTIONS``) before the program exists."""
    if not stream:
        return {}
    if options.on_stdout or options.on_stderr:
        return {**language.env, **language.stream_env, **options.env}
    return {**language.env, **options.env}


def build_command(
    argv: list[str],
    root: str,
    options: ExecutionOptions,
    language: Language,
    *,
    compile: bool,
    outside: tuple[str, ...],
) -> Command:
    """The command of one stage; its clock starts now."""
    cwd, directory = resolve_cwd(root, options.cwd, outside)
    timeout = options.compile_timeout if compile else options.timeout
    return Command(
        argv=tuple(argv),
        cwd=cwd,
        directory=directory,
        env=program_env(language, options, stream=not compile),
        stdin=None if compile else options.stdin_bytes,
        limits=options.limits,
        max_output_bytes=options.max_output_bytes,
        on_stdout=None if compile else options.on_stdout,
        on_stderr=None if compile else options.on_stderr,
        timeout=timeout,
        deadline=time.monotonic() + timeout,
        compile=compile,
    )


def host_path(root: str, host: str, cwd: str) -> str:
    """``cwd`` as seen in the workspace ``root``, translated to its ``host`` directory."""
    if cwd == root or cwd.startswith(root.rstrip("/") + "/"):
        return os.path.join(host, cwd[len(root) :].lstrip("/"))
    return cwd


def rlimits(
    limits: Limits, *, memory: str | None = None, processes: bool = True
) -> dict[str, tuple[int, int]]:
    """The rlimits for ``limits`` by ``prlimit``'s name, as (soft, hard): CPU time (SIGXCPU at
    the limit, SIGKILL a second on), open files, the largest file (``disk``), and, where
    nothing else bounds them, the processes (per user id) and the memory through ``memory``
    (``data`` or ``as``)."""
    found: dict[str, tuple[int, int]] = {}
    if limits.open_files is not None:
        found["nofile"] = (limits.open_files, limits.open_files)
    if limits.disk is not None:
        found["fsize"] = (limits.disk, limits.disk)
    if limits.cpu_time is not None:
        seconds = math.ceil(limits.cpu_time)
        found["cpu"] = (seconds, seconds + 1)
    if memory is not None and limits.memory is not None:
        found[memory] = (limits.memory, limits.memory)
    if processes and limits.processes is not None:
        found["nproc"] = (limits.processes, limits.processes)
    return found


def rlimit_options(
    limits: Limits, *, memory: str | None = None, processes: bool = True
) -> list[str]:
    """``prlimit``'s options for :func:`rlimits` (``memory`` as ``--data`` or ``--as``)."""
    found = rlimits(limits, memory=memory.lstrip("-") if memory else None, processes=processes)
    return [
        f"--{name}={soft}" if soft == hard else f"--{name}={soft}:{hard}"
        for name, (soft, hard) in found.items()
    ]
