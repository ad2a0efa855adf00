"""The run-environment interface and the pipeline shared by command-running environments."""

from __future__ import annotations

import abc
import inspect
from collections.abc import Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Any, ClassVar, Generic, TypeVar

import anyio

from .._errors import InvalidOptionsError, LanguageUnavailableError
from .._languages import LANGUAGES, Language, Toolchain, get_language, resolve
from .._live import LiveInput
from .._models import CompileResult, ExecutionOptions, ExecutionResult, Limits, encode_text
from .._process import Outcome
from .._workspace import check_tree
from .command import Command, build_command
from .workspace import Workspace


@dataclass(frozen=True, kw_only=True)
class LanguageSupport:
    """Whether one language can run in an environment, and if not, what is missing."""

    name: str
    aliases: tuple[str, ...]
    available: bool
    command: str | None = None
    missing: str | None = None


@dataclass(frozen=True, kw_only=True)
class EnvironmentStatus:
    """An environment's readiness, with the reason when it is not ready."""

    name: str
    ready: bool
    reason: str | None = None
    languages: tuple[LanguageSupport, ...] = ()
    notes: tuple[str, ...] = ()


class RunEnvironment(abc.ABC):
    """Somewhere code can run.

    Use it as an async context manager, or call :meth:`cleanup` when done.
    """

    name: ClassVar[str]

    @abc.abstractmethod
    async def execute(
        self, code: str, options: ExecutionOptions | None = None, **overrides: Any
    ) -> ExecutionResult:
        """Run ``code`` and return what happened.

        :param code: the program's source.
        :param options: how to run it; keyword ``overrides`` replace single fields.
        :returns: the result; a program that fails is a result, not an exception.
        :raises InvalidOptionsError: for an unknown language or a bad option.
        :raises EnvironmentUnavailableError: if the environment or language cannot run here.
        """

    @abc.abstractmethod
    async def cleanup(self) -> None:
        """Stop everything still running and release what the environment holds."""

    @abc.abstractmethod
    async def is_ready(self) -> bool:
        """Whether the environment can run code now."""

    async def status(self) -> EnvironmentStatus:
        """Readiness with its reason, and the languages this environment can run."""
        return EnvironmentStatus(name=self.name, ready=await self.is_ready())

    async def __aenter__(self) -> RunEnvironment:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.cleanup()


def merge_options(
    options: ExecutionOptions | Mapping[str, Any] | None, overrides: dict[str, Any]
) -> ExecutionOptions:
    """``options`` (or the defaults; a mapping of option names is taken as their values)
    with ``overrides`` applied.

    :raises InvalidOptionsError: for something that is not options, or an unknown option.
    """
    if options is None:
        base = ExecutionOptions()
    elif isinstance(options, ExecutionOptions):
        base = options
    elif isinstance(options, Mapping):
        base = ExecutionOptions().replace(**options)
    else:
        raise InvalidOptionsError(
            f"options must be ExecutionOptions or a mapping, not {type(options).__name__}"
        )
    return base.replace(**overrides) if overrides else base


def check_code(code: object) -> str:
    """``code``, if it is text.

    :raises InvalidOptionsError: otherwise (bytes included: decode them first).
    """
    if not isinstance(code, str):
        raise InvalidOptionsError(f"code must be str, not {type(code).__name__}")
    return code


def stage_fields(outcome: Outcome, timeout: float) -> dict[str, Any]:
    """The result fields common to a run and a compile step."""
    success = outcome.exit_code == 0 and not outcome.timed_out and not outcome.output_exceeded
    return {
        "success": success,
        "stdout": outcome.stdout.decode("utf-8", "replace"),
        "stderr": outcome.stderr.decode("utf-8", "replace"),
        "exit_code": outcome.exit_code,
        "execution_time": outcome.duration,
        "error": None if success else describe_failure(outcome, timeout),
        "timed_out": outcome.timed_out,
        "signal": outcome.signal,
        "stdout_truncated": outcome.stdout_truncated,
        "stderr_truncated": outcome.stderr_truncated,
        "oom_killed": outcome.oom_killed,
        "cpu_time": outcome.cpu_time,
        "memory_peak": outcome.memory_peak,
    }


LIMIT_SIGNALS = {"SIGXCPU": "CPU time", "SIGXFSZ": "file size"}


def describe_failure(outcome: Outcome, timeout: float) -> str:
    """Why a stage did not succeed, in one line."""
    if outcome.timed_out:
        return f"timed out after {timeout:g} s"
    if outcome.oom_killed:
        return "killed: out of memory"
    for stream in ("stdout", "stderr"):
        if getattr(outcome, f"{stream}_truncated"):
            return f"{stream} passed the output limit; the program was stopped"
    if outcome.signal in LIMIT_SIGNALS:
        return f"exceeded its {LIMIT_SIGNALS[outcome.signal]} limit ({outcome.signal})"
    if outcome.signal is not None:
        return f"killed by {outcome.signal}"
    return f"exited with code {outcome.exit_code}"


W = TypeVar("W", bound=Workspace)


class CommandRunEnvironment(RunEnvironment, Generic[W]):
    """An environment that runs code as commands in a workspace.

    Subclasses say where: how programs are found (:meth:`_which`), what a workspace is
    (:meth:`_workspace`, a :class:`~.workspace.Workspace` that writes, reads and removes
    its files) and how a command runs (:meth:`_run`). The rest, from language lookup to
    compile step to result, is here once.
    """

    cwd_outside: ClassVar[tuple[str, ...]] = ()
    """Directories outside the workspace an absolute ``cwd`` may be in (see
    :func:`~.command.resolve_cwd`)."""

    file_roots: ClassVar[tuple[str, ...]] = ()
    """Directories outside the workspace that ``files`` and ``fetch_files`` may name
    absolute paths below (the sandbox: ``/tmp`` and ``/mnt``, as SandboxFusion's clients
    use them); none by default."""

    def __init__(self) -> None:
        self._toolchains: dict[str, Toolchain | str] = {}
        self._workspaces: set[W] = set()

    @abc.abstractmethod
    async def _which(self, program: str) -> str | None:
        """The path of ``program`` where commands run, or None. ``{python}`` asks for the
        environment's preferred Python, if it has one."""

    @abc.abstractmethod
    async def _workspace(self) -> W:
        """A fresh private workspace for one execution (the pipeline removes it)."""

    async def _workspace_for(self, limits: Limits) -> W:
        """The workspace of an execution with ``limits`` (its own; None fields: the
        environment's defaults), for an environment that chooses where a run goes by them;
        :meth:`_workspace` by default."""
        return await self._workspace()

    @abc.abstractmethod
    async def _run(self, command: Command, workspace: W) -> Outcome:
        """Run ``command`` in the workspace, within its deadline (everything it waits for
        counts: see :mod:`~.command`), and return its outcome. ``command.directory``, when
        set, was made in the workspace already."""

    async def _toolchain(self, language: Language) -> Toolchain | str:
        if language.name not in self._toolchains:
            found: dict[str, str | None] = {}
            for argv in (*language.compile, *language.run):
                if argv[0] == "{python}" or not argv[0].startswith("{"):
                    found[argv[0]] = await self._which(argv[0])
            self._toolchains[language.name] = resolve(language, found.__getitem__)
        return self._toolchains[language.name]

    async def languages(self) -> tuple[LanguageSupport, ...]:
        """Every language in the table, and whether it can run here."""
        supports = []
        for language in LANGUAGES:
            chain = await self._toolchain(language)
            ok = isinstance(chain, Toolchain)
            supports.append(
                LanguageSupport(
                    name=language.name,
                    aliases=language.aliases,
                    available=ok,
                    command=(chain.compile or chain.run)[0]
                    if isinstance(chain, Toolchain)
                    else None,
                    missing=None if isinstance(chain, Toolchain) else chain,
                )
            )
        return tuple(supports)

    async def status(self) -> EnvironmentStatus:
        languages = await self.languages()
        ready = any(lang.available for lang in languages)
        reason = None if ready else "no language's tools were found"
        return EnvironmentStatus(name=self.name, ready=ready, reason=reason, languages=languages)

    async def is_ready(self) -> bool:
        return any(lang.available for lang in await self.languages())

    async def execute(
        self, code: str, options: ExecutionOptions | None = None, **overrides: Any
    ) -> ExecutionResult:
        options = merge_options(options, overrides)
        code = check_code(code)
        if isinstance(options.stdin, LiveInput) and options.stdin.used:
            raise InvalidOptionsError("a LiveInput serves one run, and this one was used")
        language = get_language(options.language)
        chain = await self._toolchain(language)
        if not isinstance(chain, Toolchain):
            raise LanguageUnavailableError(language.name, self.name, chain)
        filename = language.file_for(code, options.filename)
        workspace = await self._workspace_for(options.limits)
        self._workspaces.add(workspace)
        try:
            files = {self._placed(p, workspace): _as_bytes(c) for p, c in options.files.items()}
            files[filename] = encode_text(code, "code")
            fetch = {path: self._placed(path, workspace) for path in options.fetch_files}
            outside = [p for p in (*files, *fetch.values()) if p.startswith("/")]
            check_tree(p for p in files if not p.startswith("/"))
            check_tree(p.lstrip("/") for p in files if p.startswith("/"))
            if outside:
                workspace.uses({r for r in self.file_roots for p in outside if _below(p, r)})
            await workspace.write(files)
            compile_argv, run_argv = chain.commands(workspace.path, filename)
            compiled = None
            if compile_argv is not None:
                compiled = await self._compile(compile_argv, workspace, options, language)
                if options.on_compile is not None:
                    returned = options.on_compile(compiled)
                    if inspect.isawaitable(returned):
                        await returned
                if not compiled.success:
                    return self._compile_failure(compiled, language)
            command = self._command([*run_argv, *options.args], workspace, options, language)
            outcome = await self._stage(command, workspace)
            read = await workspace.read(list(fetch.values())) if fetch else {}
            fetched = {asked: read[placed] for asked, placed in fetch.items() if placed in read}
            missing = tuple(path for path in options.fetch_files if path not in fetched)
        finally:
            await self._remove(workspace)  # to its end even when cancelled (see Workspace)
        return ExecutionResult(
            **stage_fields(outcome, options.timeout),
            language=language.name,
            environment=self.name,
            compile=compiled,
            files=fetched,
            missing_files=missing,
        )

    def _placed(self, path: str, workspace: W) -> str:
        """A file's path as the workspace takes it: relative to the workspace (also when
        given as an absolute path inside it), or absolute below one of :attr:`file_roots`.

        :raises InvalidOptionsError: for another absolute path.
        """
        if not path.startswith("/"):
            return path
        if _below(path, workspace.path):
            return path[len(workspace.path.rstrip("/")) + 1 :]
        if any(_below(path, root) for root in self.file_roots):
            return path
        beyond = f", or below {' or '.join(self.file_roots)}" if self.file_roots else ""
        raise InvalidOptionsError(
            f"file path {path!r} must be relative (in the workspace){beyond} here"
        )

    async def _stage(self, command: Command, workspace: W) -> Outcome:
        if command.directory is not None:
            await workspace.make_dir(command.directory)
        return await self._run(command, workspace)

    async def _remove(self, workspace: W) -> None:
        try:
            await workspace.remove()
        finally:
            self._workspaces.discard(workspace)

    async def _remove_workspaces(self) -> None:
        """Remove the workspaces of executions still under way (for :meth:`cleanup`)."""
        for workspace in list(self._workspaces):
            with anyio.CancelScope(shield=True):
                await self._remove(workspace)

    def _command(
        self,
        argv: list[str],
        workspace: W,
        options: ExecutionOptions,
        language: Language,
        compile: bool = False,
    ) -> Command:
        return build_command(
            argv, workspace.path, options, language, compile=compile, outside=self.cwd_outside
        )

    async def _compile(
        self, argv: list[str], workspace: W, options: ExecutionOptions, language: Language
    ) -> CompileResult:
        command = self._command(argv, workspace, options, language, compile=True)
        outcome = await self._stage(command, workspace)
        return CompileResult(**stage_fields(outcome, options.compile_timeout))

    def _compile_failure(self, compiled: CompileResult, language: Language) -> ExecutionResult:
        return ExecutionResult(
            success=False,
            exit_code=None,
            error=f"compilation failed: {compiled.error}",
            language=language.name,
            environment=self.name,
            compile=compiled,
        )


def _below(path: str, directory: str) -> bool:
    return path.startswith(directory.rstrip("/") + "/")


def _as_bytes(content: str | bytes) -> bytes:
    return content.encode() if isinstance(content, str) else content  # checked by the options
