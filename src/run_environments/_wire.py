"""The JSON form of an execution request, as ``runenv serve``'s native API and the serverless
executor take it, in both directions, with the standard library only (the executor ships
without the server's dependencies)."""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from typing import Any

from ._errors import InvalidOptionsError
from ._live import LiveInput
from ._models import ExecutionOptions, Limits

_FIELDS = {
    "code", "environment", "language", "timeout", "cwd", "env", "args", "files", "files_base64",
    "max_output_bytes", "compile_timeout", "fetch_files", "limits", "stdin", "stdin_base64",
    "filename",
}  # fmt: skip


def request_body(
    code: str, options: ExecutionOptions, environment: str | None = None
) -> dict[str, Any]:
    """The JSON body of an execution of ``code`` with ``options``.

    :raises InvalidOptionsError: for a :class:`LiveInput`, which a request cannot carry.
    """
    if isinstance(options.stdin, LiveInput):
        raise InvalidOptionsError(
            "this environment takes stdin as text or bytes, not input written while the"
            " program runs"
        )
    texts = {p: c for p, c in options.files.items() if isinstance(c, str)}
    blobs = {p: c for p, c in options.files.items() if isinstance(c, bytes)}
    body: dict[str, Any] = {
        "code": code,
        "environment": environment,
        "language": options.language,
        "timeout": options.timeout,
        "cwd": options.cwd,
        "env": dict(options.env),
        "args": list(options.args),
        "files": texts,
        "files_base64": {p: base64.b64encode(c).decode() for p, c in blobs.items()},
        "max_output_bytes": options.max_output_bytes,
        "compile_timeout": options.compile_timeout,
        "fetch_files": list(options.fetch_files),
        "limits": {k: v for k, v in vars(options.limits).items() if v is not None} or None,
    }
    if isinstance(options.stdin, bytes):
        body["stdin_base64"] = base64.b64encode(options.stdin).decode()
    else:
        body["stdin"] = options.stdin
    return body


def parse_request(body: object) -> tuple[str, ExecutionOptions]:
    """The code and options of a :func:`request_body` (``filename`` may be added).

    :raises InvalidOptionsError: for anything else, naming what is wrong.
    """
    if not isinstance(body, Mapping):
        raise InvalidOptionsError("the request must be a JSON object")
    unknown = set(body) - _FIELDS
    if unknown:
        raise InvalidOptionsError(f"unknown request field(s): {', '.join(sorted(unknown))}")
    code = body.get("code")
    if not isinstance(code, str):
        raise InvalidOptionsError("code must be a string")
    files: dict[str, str | bytes] = dict(_mapping(body, "files"))
    for path, data in _mapping(body, "files_base64").items():
        files[path] = _decode(data, f"files_base64[{path!r}]")
    if body.get("stdin") is not None and body.get("stdin_base64") is not None:
        raise InvalidOptionsError("give stdin or stdin_base64, not both")
    stdin: str | bytes | None = body.get("stdin")
    if body.get("stdin_base64") is not None:
        stdin = _decode(body["stdin_base64"], "stdin_base64")
    limits = body.get("limits") or {}
    if not isinstance(limits, Mapping):
        raise InvalidOptionsError("limits must be an object")
    given = {
        name: body[name]
        for name in ("language", "timeout", "cwd", "max_output_bytes", "compile_timeout")
        if body.get(name) is not None
    }
    for name in ("timeout", "compile_timeout", "max_output_bytes"):
        if name in given and (
            isinstance(given[name], bool) or not isinstance(given[name], int | float)
        ):
            raise InvalidOptionsError(f"{name} must be a number")
    try:
        limits_object = Limits(**limits)
    except TypeError as exc:
        raise InvalidOptionsError(f"invalid limits: {exc}") from None
    return code, ExecutionOptions(
        **given,
        env=_mapping(body, "env"),
        stdin=stdin,
        args=_list(body, "args"),
        files=files,
        fetch_files=_list(body, "fetch_files"),
        filename=body.get("filename"),
        limits=limits_object,
    )


def _mapping(body: Mapping[str, Any], name: str) -> dict[str, str]:
    value = body.get(name) or {}
    if not isinstance(value, Mapping) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in value.items()
    ):
        raise InvalidOptionsError(f"{name} must be an object of strings")
    return dict(value)


def _list(body: Mapping[str, Any], name: str) -> list[str]:
    value = body.get(name) or []
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise InvalidOptionsError(f"{name} must be a list of strings")
    return value


def _decode(data: object, what: str) -> bytes:
    if not isinstance(data, str):
        raise InvalidOptionsError(f"{what} must be base64 text")
    try:
        return base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidOptionsError(f"{what} is not valid base64") from None
