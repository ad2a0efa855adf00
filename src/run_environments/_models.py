"""Options in, results out: the values every environment speaks."""

from __future__ import annotations

import base64
import dataclasses
import inspect
import json
import math
import posixpath
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ._errors import ExecutionFailed, InvalidOptionsError
from ._languages import get_language
from ._live import LiveInput

OutputCallback = Callable[[str], Awaitable[None] | None]
"""Receives output text as it arrives; it may be a plain function or a coroutine function."""


class RawOutput:
    """An output callback that receives the program's bytes exactly as it wrote them,
    where the environment sees bytes (local, sandbox); where it sees only text (E2B, a
    remote server), the text encoded as UTF-8.

    :param write: called with each chunk; a plain function or a coroutine function.
    """

    def __init__(self, write: Callable[[bytes], Awaitable[None] | None]) -> None:
        self.write = write

    def __call__(self, text: str) -> Awaitable[None] | None:
        return self.write(text.encode())


async def deliver(callback: OutputCallback, text: str) -> None:
    """Give ``text`` to ``callback``, awaiting it if it is a coroutine function."""
    returned = callback(text)
    if inspect.isawaitable(returned):
        await returned


DEFAULT_TIMEOUT = 30.0
DEFAULT_COMPILE_TIMEOUT = 60.0
DEFAULT_MAX_OUTPUT_BYTES = 1 << 20


MAX_FETCH_FILES = 1024
"""The most paths one execution may ask to fetch."""


def encode_text(text: str, what: str) -> bytes:
    """``text`` as UTF-8.

    :raises InvalidOptionsError: if it cannot be (a lone surrogate, as JSON may carry).
    """
    try:
        return text.encode()
    except UnicodeEncodeError as exc:
        raise InvalidOptionsError(
            f"{what} is not valid Unicode text: {exc.reason} at position {exc.start}"
        ) from None


def _check_str_map(name: str, value: Mapping[str, str]) -> dict[str, str]:
    result = dict(value)
    for key, item in result.items():
        if not isinstance(key, str) or not isinstance(item, str):
            raise InvalidOptionsError(f"{name} must map str to str, got {key!r}: {item!r}")
        if not key or "=" in key or "\0" in key or "\0" in item:
            raise InvalidOptionsError(f"{name} has an invalid variable {key!r}")
        encode_text(key, f"{name} name {key!r}")
        encode_text(item, f"{name}[{key!r}]")
    return result


def check_relative_path(path: str) -> str:
    """Return ``path`` normalised, or raise if it could leave the working directory."""
    if not isinstance(path, str) or not path or "\0" in path:
        raise InvalidOptionsError(f"invalid file path {path!r}")
    encode_text(path, f"file path {path!r}")
    if path.startswith("/") or ".." in path.split("/"):
        raise InvalidOptionsError(
            f"file path {path!r} must be relative and stay inside the working directory"
        )
    normal = posixpath.normpath(path)
    if normal in (".", ""):
        raise InvalidOptionsError(f"file path {path!r} names the working directory itself")
    return normal


def check_file_path(path: str) -> str:
    """Return a file's path normalised: relative (inside the workspace), or absolute without
    ``..`` (an environment decides which absolute places it offers: see
    ``CommandRunEnvironment.file_roots``)."""
    if isinstance(path, str) and path.startswith("/") and "\0" not in path:
        encode_text(path, f"file path {path!r}")
        normal = posixpath.normpath(path)
        if ".." in path.split("/") or normal == "/" or normal.startswith("//"):
            raise InvalidOptionsError(f"file path {path!r} must not leave its directory")
        return normal
    return check_relative_path(path)


def _check_files(value: Mapping[str, str | bytes]) -> dict[str, str | bytes]:
    files: dict[str, str | bytes] = {}
    for path, content in dict(value).items():
        if not isinstance(content, str | bytes):
            raise InvalidOptionsError(f"content of file {path!r} must be str or bytes")
        if isinstance(content, str):
            encode_text(content, f"content of file {path!r}")
        files[check_file_path(path)] = content
    return files


def _check_seconds(name: str, value: float | None) -> None:
    if value is None:
        return
    if not isinstance(value, int | float) or not math.isfinite(value) or value <= 0:
        raise InvalidOptionsError(f"{name} must be a positive number of seconds, got {value!r}")


def _check_positive(name: str, value: float | None, kind: type | tuple[type, ...]) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, kind) or not math.isfinite(value):
        raise InvalidOptionsError(f"{name} must be a positive number, got {value!r}")
    if value <= 0:
        raise InvalidOptionsError(f"{name} must be a positive number, got {value!r}")


LIMIT_MAXIMUMS = {
    "memory": 1 << 50,
    "disk": 1 << 50,
    "processes": 1 << 22,  # the kernel's most PIDs
    "open_files": 1 << 20,  # the kernel's most descriptors of a process (nr_open)
    "cpu_time": 1e9,
}
"""What no machine can give: larger values are mistakes, whatever the environment."""


@dataclass(frozen=True, kw_only=True)
class Limits:
    """Resource limits of one execution; ``None`` leaves the environment's default.

    :param memory: bytes of memory for the whole program (all its processes).
    :param cpu_time: seconds of CPU time for each process.
    :param processes: processes and threads at once.
    :param disk: bytes of the private ``/tmp``, and the largest file the program may write.
    :param open_files: open files of each process.
    """

    memory: int | None = None
    cpu_time: float | None = None
    processes: int | None = None
    disk: int | None = None
    open_files: int | None = None

    def __post_init__(self) -> None:
        for name in ("memory", "processes", "disk", "open_files"):
            _check_positive(f"limits.{name}", getattr(self, name), int)
        _check_positive("limits.cpu_time", self.cpu_time, (int, float))
        for name, most in LIMIT_MAXIMUMS.items():
            value = getattr(self, name)
            if value is not None and value > most:
                raise InvalidOptionsError(f"limits.{name} must be at most {most:g}, not {value:g}")

    def over(self, defaults: Limits) -> Limits:
        """These limits, with ``defaults`` where a field is None."""
        return Limits(
            **{
                f.name: getattr(defaults, f.name)
                if getattr(self, f.name) is None
                else getattr(self, f.name)
                for f in dataclasses.fields(self)
            }
        )


@dataclass(frozen=True, kw_only=True)
class ExecutionOptions:
    """How to run one piece of code.

    :param language: a language name or alias from the language table.
    :param timeout: wall-clock limit of the run, in seconds.
    :param cwd: working directory; a relative path is taken inside the run's private
        workspace (and created), an absolute one is used as it is where the environment allows.
    :param env: extra environment variables for the program.
    :param stdin: text or bytes fed to the program's standard input, or a
        :class:`LiveInput` written while it runs.
    :param args: program arguments.
    :param files: path -> content, written before the run: relative paths into the
        workspace, absolute ones where the environment offers (the sandbox: below ``/tmp``
        and ``/mnt``).
    :param max_output_bytes: the most kept of each of stdout and stderr; a program that writes
        more is stopped and the result says the stream was truncated.
    :param compile_timeout: wall-clock limit of the compile step of compiled languages.
    :param fetch_files: workspace-relative paths of files to return in ``result.files``
        (those that could not be read are named in ``result.missing_files``).
    :param filename: the code file's path in the workspace (default: the language's own,
        such as ``main.py``; a Java file's name is its public class's).
    :param limits: resource limits, for environments that enforce them (see :class:`Limits`).
    :param on_stdout: called with stdout text as it arrives.
    :param on_stderr: called with stderr text as it arrives.
    :param on_compile: called with the :class:`CompileResult` of a compiled language as
        soon as its compile step ends, before the program runs (or, failed, does not).
    """

    language: str = "python"
    timeout: float = DEFAULT_TIMEOUT
    cwd: str | None = None
    env: Mapping[str, str] = field(default_factory=dict)
    stdin: str | bytes | LiveInput | None = None
    args: Sequence[str] = ()
    files: Mapping[str, str | bytes] = field(default_factory=dict)
    max_output_bytes: int = DEFAULT_MAX_OUTPUT_BYTES
    compile_timeout: float = DEFAULT_COMPILE_TIMEOUT
    limits: Limits = field(default_factory=Limits)
    fetch_files: Sequence[str] = ()
    filename: str | None = None
    on_stdout: OutputCallback | None = field(default=None, compare=False, repr=False)
    on_stderr: OutputCallback | None = field(default=None, compare=False, repr=False)
    on_compile: Callable[[CompileResult], Awaitable[None] | None] | None = field(
        default=None, compare=False, repr=False
    )

    def __post_init__(self) -> None:
        if not isinstance(self.language, str) or not self.language:
            raise InvalidOptionsError("language must be a non-empty string")
        get_language(self.language)  # an unknown one is an error here, not at execute
        _check_seconds("timeout", self.timeout)
        _check_seconds("compile_timeout", self.compile_timeout)
        if isinstance(self.args, str | bytes) or not all(isinstance(a, str) for a in self.args):
            raise InvalidOptionsError("args must be a sequence of strings")
        if any("\0" in a for a in self.args):
            raise InvalidOptionsError("args must not contain NUL characters")
        for i, arg in enumerate(self.args):
            encode_text(arg, f"args[{i}]")
        if self.stdin is not None and not isinstance(self.stdin, str | bytes | LiveInput):
            raise InvalidOptionsError("stdin must be str, bytes, a LiveInput or None")
        if isinstance(self.stdin, str):
            encode_text(self.stdin, "stdin")
        if self.cwd is not None and (not isinstance(self.cwd, str) or "\0" in self.cwd):
            raise InvalidOptionsError(f"invalid cwd {self.cwd!r}")
        if self.cwd is not None:
            encode_text(self.cwd, "cwd")
        if not isinstance(self.max_output_bytes, int) or self.max_output_bytes < 1:
            raise InvalidOptionsError("max_output_bytes must be a positive integer")
        if isinstance(self.limits, Mapping):
            try:
                object.__setattr__(self, "limits", Limits(**self.limits))
            except TypeError as exc:
                raise InvalidOptionsError(f"invalid limits: {exc}") from None
        if not isinstance(self.limits, Limits):
            raise InvalidOptionsError("limits must be a Limits object or a mapping of its fields")
        for name in ("on_stdout", "on_stderr", "on_compile"):
            if getattr(self, name) is not None and not callable(getattr(self, name)):
                raise InvalidOptionsError(f"{name} must be callable")
        object.__setattr__(self, "args", tuple(self.args))
        object.__setattr__(self, "env", _check_str_map("env", self.env))
        object.__setattr__(self, "files", _check_files(self.files))
        if isinstance(self.fetch_files, str | bytes):
            raise InvalidOptionsError("fetch_files must be a sequence of paths")
        fetch = tuple(self.fetch_files)
        if len(fetch) > MAX_FETCH_FILES:
            raise InvalidOptionsError(
                f"fetch_files names {len(fetch)} paths; at most {MAX_FETCH_FILES}"
            )
        object.__setattr__(self, "fetch_files", tuple(check_file_path(p) for p in fetch))
        if self.filename is not None:
            if not isinstance(self.filename, str):
                raise InvalidOptionsError("filename must be a relative path")
            object.__setattr__(self, "filename", check_relative_path(self.filename))

    def replace(self, **changes: Any) -> ExecutionOptions:
        """Return a copy with ``changes`` applied (and validated)."""
        unknown = set(changes) - {f.name for f in dataclasses.fields(self)}
        if unknown:
            raise InvalidOptionsError(f"unknown execution option(s): {', '.join(sorted(unknown))}")
        return dataclasses.replace(self, **changes)

    @property
    def stdin_bytes(self) -> bytes | LiveInput | None:
        """``stdin`` as bytes (text is encoded as UTF-8), or the :class:`LiveInput`."""
        return self.stdin.encode() if isinstance(self.stdin, str) else self.stdin


@dataclass(frozen=True, kw_only=True)
class _Stage:
    success: bool
    stdout: str = ""
    stderr: str = ""
    exit_code: int | None = None
    execution_time: float = 0.0
    error: str | None = None
    timed_out: bool = False
    signal: str | None = None
    stdout_truncated: bool = False
    stderr_truncated: bool = False
    oom_killed: bool = False
    cpu_time: float | None = None
    memory_peak: int | None = None

    def __bool__(self) -> bool:
        return self.success

    def to_dict(self) -> dict[str, Any]:
        """The result as plain JSON-ready data, with the field names as they are here."""
        return dataclasses.asdict(self)

    def to_json(self, **kwargs: Any) -> str:
        """The result as a JSON document."""
        return json.dumps(self.to_dict(), **kwargs)


@dataclass(frozen=True, kw_only=True)
class CompileResult(_Stage):
    """The outcome of the compile step of a compiled language."""

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> CompileResult:
        """Rebuild a result from :meth:`to_dict` output."""
        return cls(**data)


@dataclass(frozen=True, kw_only=True)
class ExecutionResult(_Stage):
    """The outcome of one execution.

    ``success`` is true only for exit code 0 within the time limit; ``error`` says why
    whenever it is false. ``bool(result)`` is ``result.success``.
    """

    language: str = ""
    environment: str = ""
    compile: CompileResult | None = None
    files: Mapping[str, bytes] = field(default_factory=dict)
    missing_files: tuple[str, ...] = ()
    """The ``fetch_files`` that could not be read (missing, not a regular file, past the
    size bound)."""

    def to_dict(self) -> dict[str, Any]:
        """The result as JSON-ready data; fetched files' contents are base64."""
        data = super().to_dict()
        data["files"] = {k: base64.b64encode(v).decode() for k, v in self.files.items()}
        data["missing_files"] = list(self.missing_files)
        return data

    def check(self) -> ExecutionResult:
        """Return the result if it succeeded.

        :raises ExecutionFailed: with the result attached, if it did not.
        """
        if not self.success:
            raise ExecutionFailed(self)
        return self

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ExecutionResult:
        """Rebuild a result from :meth:`to_dict` output."""
        fields = dict(data)
        if fields.get("compile") is not None:
            fields["compile"] = CompileResult.from_dict(fields["compile"])
        fields["files"] = {k: base64.b64decode(v) for k, v in fields.get("files", {}).items()}
        fields["missing_files"] = tuple(fields.get("missing_files", ()))
        return cls(**fields)
