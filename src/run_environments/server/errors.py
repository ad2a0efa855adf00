"""Errors as data, and the wire format that answers them.

Handlers and middleware make a :class:`Problem` (status, message, structured fields) and ask
:class:`ErrorFormats` for the response; each router registers the format of the paths it owns.
Nothing shared knows a wire format or a path prefix.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from starlette.responses import JSONResponse

from .._errors import (
    EnvironmentUnavailableError,
    RunEnvironmentError,
    UnknownEnvironmentError,
    UnknownLanguageError,
)
from .admission import Overloaded


@dataclass(frozen=True)
class Problem:
    """Why a request failed: an HTTP status, a message, and fields a client can read
    instead of parsing the message (``type``, ``language``, ``supported``, ...)."""

    status: int
    message: str
    fields: dict[str, Any] = field(default_factory=dict)
    validation: list[dict[str, Any]] | None = None
    headers: dict[str, str] | None = None
    http: bool = False
    """An HTTP-level refusal (401, 404, 405, 415...), not one of the package's errors."""


def problem_of(exc: RunEnvironmentError) -> Problem:
    """The problem a package exception makes."""
    fields: dict[str, Any] = {"type": type(exc).__name__}
    if isinstance(exc, Overloaded):
        return Problem(429, "too many executions are waiting; retry later", fields,
                       headers={"Retry-After": "1"})  # fmt: skip
    if isinstance(exc, UnknownLanguageError):
        fields.update(language=exc.language, supported=exc.supported)
    if isinstance(exc, UnknownEnvironmentError):
        fields.update(environment=exc.name, known=exc.known)
    if isinstance(exc, EnvironmentUnavailableError):
        return Problem(503, str(exc), fields, headers={"Retry-After": "1"})
    return Problem(422, str(exc), fields)


def native(problem: Problem) -> JSONResponse:
    """The native API's errors, all of one shape: ``{"error": {"message", "type", ...}}``;
    a request that does not validate has type ``ValidationError`` and its ``errors``, an
    HTTP-level refusal type ``HTTPError``."""
    fields = dict(problem.fields)
    if problem.validation is not None:
        fields = {"type": "ValidationError", "errors": problem.validation}
    elif problem.http:
        fields = {"type": "HTTPError"}
    body = {"error": {"message": problem.message, **fields}}
    return JSONResponse(body, problem.status, headers=problem.headers)


ErrorFormat = Callable[[Problem], JSONResponse]


class ErrorFormats:
    """Which wire format answers the errors of a path: the first registered prefix that
    matches, else ``default``."""

    def __init__(self, default: ErrorFormat = native) -> None:
        self.default = default
        self._formats: list[tuple[str, ErrorFormat]] = []

    def register(self, prefix: str, error_format: ErrorFormat) -> None:
        self._formats.append((prefix, error_format))

    def respond(self, path: str, problem: Problem) -> JSONResponse:
        for prefix, error_format in self._formats:
            if path.startswith(prefix):
                return error_format(problem)
        return self.default(problem)
