"""The executor: the function deployed to AWS Lambda or Google Cloud Functions, which runs
one execution request inside the function's instance and answers with its result.

It runs programs exactly as the local environment does (the same language table, a private
workspace under the instance's temporary directory, the same timeouts and output bound),
with a clean environment (the function's own variables, such as its role's credentials, are
not passed on) and every process a run started killed when it ends. Standard library and
anyio only: the deployed package holds nothing else.

Entry points: :func:`handler` for Lambda (``HANDLER``) and :func:`http` for Cloud Functions
(an HTTP function; ``main.py`` of the deployed source names it ``execute``). A request is
the JSON of :func:`~run_environments._wire.request_body` (plus ``filename``), or
``{"action": "status"}`` for the languages the instance can run. Answers:
``{"result": ...}``, ``{"status": ...}`` or ``{"error": {"type", "message"}}``.
"""

from __future__ import annotations

import contextvars
import ctypes
import dataclasses
import json
import os
import queue
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

import anyio

from ..._errors import InvalidOptionsError, LanguageUnavailableError, RunEnvironmentError
from ..._models import ExecutionOptions
from ..._wire import parse_request
from ..base import LanguageSupport
from ..command import Command
from ..local import LocalRunEnvironment
from ..workspace import HostWorkspace

HANDLER = "run_environments.environments.serverless.executor.handler"
"""The Lambda handler's name."""

RESERVE = 2.0
"""Seconds of the function's own time limit kept for stopping a program and answering."""

_deadline: contextvars.ContextVar[float | None] = contextvars.ContextVar("deadline", default=None)


class FunctionEnvironment(LocalRunEnvironment):
    """The local environment as the function runs it: a clean environment, every process a
    run started killed at its end, and no stage past the function's own deadline."""

    def __init__(self) -> None:
        super().__init__(inherit_env=False, kill_leftovers=True)

    def _command(
        self,
        argv: list[str],
        workspace: HostWorkspace,
        options: ExecutionOptions,
        language: Any,
        compile: bool = False,
    ) -> Command:
        command = super()._command(argv, workspace, options, language, compile)
        deadline = _deadline.get()
        if deadline is not None and deadline < command.deadline:
            command = dataclasses.replace(command, deadline=deadline)
        return command


_environment: FunctionEnvironment | None = None
PR_SET_DUMPABLE = 4


def environment() -> FunctionEnvironment:
    """The instance's environment (made once, reused by the invocations it serves).

    Made first, it also makes this process undumpable: programs run as the function's own
    user, and would otherwise read its ``/proc`` files (``environ`` holds a Lambda role's
    credentials) or trace it. The programs themselves are not affected (the flag is reset
    by ``execve``)."""
    global _environment
    if _environment is None:
        if sys.platform == "linux":
            ctypes.CDLL(None, use_errno=True).prctl(PR_SET_DUMPABLE, 0, 0, 0, 0)
        _environment = FunctionEnvironment()
    return _environment


async def answer(request: object, seconds_left: float | None, **callbacks: Any) -> dict[str, Any]:
    """The answer to one request, given the seconds the function has left (None: no limit
    known); ``callbacks`` (``on_stdout``, ``on_stderr``, ``on_compile``) are the run's."""
    try:
        if isinstance(request, dict) and request.get("action") == "status":
            return {"status": await _status()}
        code, options = parse_request(request)
        if callbacks:
            options = options.replace(**callbacks)
        if seconds_left is not None:
            _deadline.set(time.monotonic() + max(seconds_left - RESERVE, 0.0))
        result = await environment().execute(code, options)
        data = result.to_dict()
        deadline = _deadline.get()
        if result.timed_out and deadline is not None and time.monotonic() >= deadline - 0.1:
            data["error"] = (
                "timed out: the function's own time limit came first (less"
                f" {RESERVE:g} s kept to answer)"
            )
        return {"result": data}
    except LanguageUnavailableError as exc:
        return _error(exc, language=exc.language, missing=exc.missing)
    except RunEnvironmentError as exc:
        return _error(exc)


def _error(exc: Exception, **extra: Any) -> dict[str, Any]:
    return {"error": {"type": type(exc).__name__, "message": str(exc), **extra}}


async def _status() -> dict[str, Any]:
    languages: tuple[LanguageSupport, ...] = await environment().languages()
    return {
        "languages": [dataclasses.asdict(language) for language in languages],
        "python": os.environ.get("AWS_EXECUTION_ENV") or os.environ.get("K_SERVICE") or "",
    }


def bounded(data: dict[str, Any], limit: int) -> str:
    """``data`` as JSON, or an error when that is longer than ``limit`` bytes (what the
    platform returns at most)."""
    text = json.dumps(data)
    if len(text) > limit:  # ASCII: json.dumps escapes the rest
        message = (
            f"the result is {len(text)} bytes as JSON, and this platform returns at most"
            f" {limit}: ask for less output (max_output_bytes) or fewer fetch_files"
        )
        text = json.dumps({"error": {"type": "ResponseTooLarge", "message": message}})
    return text


LAMBDA_RESPONSE_BYTES = 6 * 1024 * 1024 - 1024
CLOUD_FUNCTIONS_RESPONSE_BYTES = 32 * 1024 * 1024 - 1024


def handler(event: Any, context: Any) -> Any:
    """AWS Lambda's entry point."""
    left = context.get_remaining_time_in_millis() / 1000 if context is not None else None
    return json.loads(bounded(anyio.run(answer, event, left), LAMBDA_RESPONSE_BYTES))


def http(request: Any) -> Any:
    """Google Cloud Functions' entry point (a Flask request). A request with
    ``"stream": true`` is answered with NDJSON as the program runs (see :func:`stream`)."""
    limit = os.environ.get("RUNENV_FUNCTION_TIMEOUT")  # set by ``runenv deploy``
    started = time.monotonic()
    try:
        body = json.loads(request.get_data(cache=False))
    except ValueError:
        data = _error(InvalidOptionsError("the request body must be a JSON object"))
        return json.dumps(data), 400, {"Content-Type": "application/json"}
    left = float(limit) - (time.monotonic() - started) if limit else None
    if isinstance(body, dict) and body.pop("stream", False) is True:
        import flask  # the platform's framework

        return flask.Response(stream(body, left), mimetype="application/x-ndjson")
    text = bounded(anyio.run(answer, body, left), CLOUD_FUNCTIONS_RESPONSE_BYTES)
    return text, 200, {"Content-Type": "application/json"}


HEARTBEAT = 0.5
"""Seconds between empty lines of a silent stream: writing them is how a client that went
away is noticed (its run is then cancelled, its processes killed)."""


def stream(body: object, seconds_left: float | None) -> Iterator[str]:
    """The answer as NDJSON lines, ``{"stdout": text}`` and ``{"stderr": text}`` as the
    program writes (``{"compile": ...}`` when a compile step ends), empty lines while it is
    silent, then ``{"result": ...}`` or
    ``{"error": ...}``. The run is in a thread of its own; closing the iterator (the client
    went away) cancels it."""
    events: queue.Queue[tuple[str, Any]] = queue.Queue()
    gone = threading.Event()

    async def run() -> dict[str, Any]:
        data = _error(RunEnvironmentError("the client went away: the run was stopped"))
        async with anyio.create_task_group() as tg:

            async def watch() -> None:  # its thread ends when the stream does
                await anyio.to_thread.run_sync(gone.wait, abandon_on_cancel=True)
                tg.cancel_scope.cancel()

            tg.start_soon(watch)
            data = await answer(
                body,
                seconds_left,
                on_stdout=lambda text: events.put(("stdout", text)),
                on_stderr=lambda text: events.put(("stderr", text)),
                on_compile=lambda compiled: events.put(("compile", compiled.to_dict())),
            )
            tg.cancel_scope.cancel()
        return data

    def work() -> None:
        try:
            events.put(("end", anyio.run(run)))
        except Exception as exc:  # a failure of the executor itself, said to the client
            events.put(("end", _error(exc)))

    worker = threading.Thread(target=work, name="runenv-stream", daemon=True)
    worker.start()
    try:
        while True:
            try:
                kind, value = events.get(timeout=HEARTBEAT)
            except queue.Empty:
                yield "\n"
                continue
            if kind == "end":
                yield bounded(value, CLOUD_FUNCTIONS_RESPONSE_BYTES) + "\n"
                return
            yield json.dumps({kind: value}) + "\n"
    finally:
        gone.set()
        worker.join()
