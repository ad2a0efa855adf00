"""What ``runenv run`` sends: the program file under its own name, a directory's tree, chosen
files; standard input; environment variables; sizes. Everything read here is bounded."""

from __future__ import annotations

import os
import stat
import sys
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import ClassVar

import click

from .common import Failure

MAX_FILES = 10_000
"""The most files one run sends."""
MAX_BYTES = 64 << 20
"""The most bytes of files one run sends."""
MAX_STDIN = 256 << 20
"""The most of runenv's standard input passed on to the program."""
SKIPPED_DIRECTORIES = frozenset({".git", "__pycache__"})
"""Directories never sent from a tree (version control, byte-code caches)."""


@dataclass
class Sources:
    """The files of one run, by their path in the workspace, and what was left out."""

    files: dict[str, bytes] = field(default_factory=dict)
    size: int = 0
    skipped: list[str] = field(default_factory=list)

    def add(self, name: str, data: bytes) -> None:
        if name not in self.files and len(self.files) >= MAX_FILES:
            raise Failure(
                f"more than {MAX_FILES} files to send: choose fewer (-f), or a smaller --dir"
            )
        self.size += len(data) - len(self.files.get(name, b""))
        if self.size > MAX_BYTES:
            raise Failure(f"more than {MAX_BYTES >> 20} MiB of files to send: choose fewer")
        self.files[name] = data

    def add_path(self, path: str, name: str) -> None:
        """``path`` (a file, or a directory with its tree) as ``name`` in the workspace."""
        try:
            info = os.stat(path)
        except OSError as exc:
            raise Failure(f"cannot read {path}: {exc.strerror}") from None
        if stat.S_ISDIR(info.st_mode):
            self.add_tree(path, name)
        else:
            self.add(name, read_file(path))

    def add_tree(self, root: str, under: str = "") -> None:
        """The regular files of ``root``, as ``under/<relative path>``; links and special
        files are left out (and listed in ``skipped``), as are :data:`SKIPPED_DIRECTORIES`."""
        for directory, subdirectories, names in os.walk(root, onerror=_unreadable):
            subdirectories[:] = sorted(d for d in subdirectories if d not in SKIPPED_DIRECTORIES)
            relative = os.path.relpath(directory, root)
            for name in sorted(names):
                path = os.path.join(directory, name)
                target = os.path.normpath(os.path.join(under, relative, name))
                if not stat.S_ISREG(os.lstat(path).st_mode):
                    self.skipped.append(path)
                    continue
                self.add(target, read_file(path))


def _unreadable(exc: OSError) -> None:
    raise Failure(f"cannot read {exc.filename}: {exc.strerror}")


def read_file(path: str) -> bytes:
    """The content of the regular file ``path`` (at most :data:`MAX_BYTES`)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        raise Failure(f"cannot read {path}: {exc.strerror}") from None
    with os.fdopen(fd, "rb") as fh:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise Failure(f"{path} is not a regular file")
        data = fh.read(MAX_BYTES + 1)
    if len(data) > MAX_BYTES:
        raise Failure(f"{path} is larger than {MAX_BYTES >> 20} MiB")
    return data


def split_add(value: str) -> tuple[str, str]:
    """``PATH[:NAME]`` -> (PATH, NAME), NAME defaulting to PATH's own name."""
    path, sep, name = value.rpartition(":")
    if not sep or not path:
        path, name = value, ""
    name = name or os.path.basename(os.path.normpath(path))
    if os.path.isabs(name) or name in ("", ".", ".."):
        raise Failure(f"-f {value}: the name in the workspace must be a relative path")
    return path, name


def program_file(file: str, directory: str | None) -> str:
    """The program's path in the workspace: inside ``directory`` its path there, else its
    own name."""
    if directory is not None:
        relative = os.path.relpath(os.path.abspath(file), os.path.abspath(directory))
        if not relative.startswith(".."):
            return relative
    return os.path.basename(file)


def program_text(file: str, data: bytes) -> str:
    try:
        return data.decode()
    except UnicodeDecodeError as exc:
        raise Failure(f"{file} is not UTF-8 text (byte {exc.start})") from None


def standard_input(text: str | None, path: str | None, attached: bool) -> bytes | str | None:
    """What the program reads: ``--stdin`` text, a ``--stdin-file``, else runenv's own
    standard input when it is not a terminal (as with ``python`` or ``docker run -i``)."""
    if text is not None:
        return text
    if path is not None:
        if path == "-":
            return _read_stdin()
        return read_file(path)
    if attached and sys.stdin is not None and not sys.stdin.isatty():
        return _read_stdin()
    return None


def _read_stdin() -> bytes:
    try:
        stream = sys.stdin.buffer
        data = stream.read(MAX_STDIN + 1)
    except (OSError, ValueError, AttributeError):
        return b""  # closed, or not there
    if len(data) > MAX_STDIN:
        raise Failure(f"standard input is larger than {MAX_STDIN >> 20} MiB")
    return data


def variables(
    pairs: Iterable[str], env_files: Iterable[str], environments: Iterable[str]
) -> dict[str, str]:
    """``-e KEY=VALUE`` (or ``-e KEY``: its value here) and ``--env-file`` lines, in the way
    ``docker run`` reads them; later ones win."""
    found: dict[str, str] = {}
    for path in env_files:
        text = program_text(path, read_file(path))
        for number, line in enumerate(text.splitlines(), 1):
            line = line.strip()
            if line and not line.startswith("#"):
                found.update(_variable(line, f"{path}:{number}", environments))
    for pair in pairs:
        found.update(_variable(pair, f"-e {pair}", environments))
    return found


def _variable(text: str, where: str, environments: Iterable[str]) -> dict[str, str]:
    key, sep, value = text.partition("=")
    if not key or any(c in key for c in "\0 \t"):
        raise Failure(f"{where}: not a variable (KEY=VALUE)")
    if sep:
        return {key: value}
    if key in os.environ:
        return {key: os.environ[key]}
    if key in environments:
        raise Failure(
            f"{where}: -e sets an environment variable (as with docker run); "
            f"to run in the {key} environment, use -E {key}"
        )
    return {}  # as docker: a name that is not set here is not passed


class Size(click.ParamType):  # type: ignore[type-arg]
    """A size in bytes: ``512m``, ``1g``, ``64k``, ``1024`` (binary multiples, as docker)."""

    name = "size"
    UNITS: ClassVar[dict[str, int]] = {"": 1, "b": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30}

    def convert(
        self, value: object, param: click.Parameter | None, ctx: click.Context | None
    ) -> int:
        if isinstance(value, int):
            return value
        text = str(value).strip().lower().removesuffix("ib").removesuffix("b")
        unit = text[-1:] if text[-1:].isalpha() else ""
        try:
            number = float(text[: len(text) - len(unit)])
            size = int(number * self.UNITS[unit])
        except (KeyError, ValueError, OverflowError):
            self.fail(f"{value!r} is not a size (like 512m, 1g, 64k or 1024)", param, ctx)
        if size < 1:
            self.fail(f"{value!r} must be at least one byte", param, ctx)
        return size
