"""Which language a file is written in: by its suffix, else by its ``#!`` line."""

from __future__ import annotations

from ._errors import UnknownLanguageError
from ._languages import _BY_NAME, LANGUAGES, Language, language_names


def language_for_path(path: str, first_line: str | bytes | None = None) -> Language:
    """The language of the file at ``path``: by its suffix, else by its ``#!`` line
    (``first_line``, when given).

    :raises UnknownLanguageError: if neither says (the message names the suffix).
    """
    name = path.rsplit("/", 1)[-1]
    for lang in LANGUAGES:
        if any(name.endswith(suffix) for suffix in (lang.suffix, *lang.suffixes)):
            return lang
    if first_line is not None:
        found = language_for_shebang(first_line)
        if found is not None:
            return found
    suffix = name.rsplit(".", 1)[-1] if "." in name.lstrip(".") else None
    error = UnknownLanguageError(name, language_names())
    known = ", ".join(s for lang in LANGUAGES for s in (lang.suffix, *lang.suffixes))
    said = f"unknown file suffix '.{suffix}'" if suffix else "no file suffix"
    error.args = (
        f"{said} of {name!r} and no #! line naming an interpreter: give the language "
        f"(known suffixes: {known})",
    )
    raise error


_SHEBANG_NAMES = {"node": "javascript", "nodejs": "javascript", "sh": "bash", "dash": "bash",
                  "ts-node": "typescript", "python": "python"}  # fmt: skip


def language_for_shebang(first_line: str | bytes) -> Language | None:
    """The language whose interpreter a ``#!`` line names (``#!/usr/bin/env python3``,
    ``#!/bin/bash``), or None."""
    line = first_line.decode(errors="replace") if isinstance(first_line, bytes) else first_line
    if not line.startswith("#!"):
        return None
    words = line[2:].split()
    if words and words[0].rsplit("/", 1)[-1] == "env":
        words = [w for w in words[1:] if not w.startswith("-") and "=" not in w]
    if not words:
        return None
    program = words[0].rsplit("/", 1)[-1]
    base = program.rstrip("0123456789.")  # python3.11 -> python
    for candidate in (program, base):
        if candidate in _SHEBANG_NAMES:
            return _BY_NAME[_SHEBANG_NAMES[candidate]]
        if candidate in _BY_NAME:
            return _BY_NAME[candidate]
    return None
