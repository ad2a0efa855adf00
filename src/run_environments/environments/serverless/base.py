"""What the Lambda and Cloud Functions environments share: a request out, a result back."""

from __future__ import annotations

import abc
import dataclasses
import inspect
import json
from typing import Any, ClassVar, NoReturn

from ..._errors import (
    InvalidOptionsError,
    LanguageUnavailableError,
    RunEnvironmentError,
    ServiceError,
    SpawnError,
)
from ..._models import CompileResult, ExecutionOptions, ExecutionResult, deliver
from ..._wire import request_body
from ..base import EnvironmentStatus, LanguageSupport, RunEnvironment, check_code, merge_options

MARGIN = 30.0
"""Seconds the client waits for an answer beyond the run's own time limits."""


class ServerlessRunEnvironment(RunEnvironment):
    """Runs each execution as one invocation of a deployed executor function.

    Where the function cannot answer as the program runs (:attr:`streams`), output reaches
    ``on_stdout``/``on_stderr`` when the invocation answers, and cancelling an execute
    abandons the invocation (the function runs the program on to its timeout). Input
    written while the program runs is refused (a request carries its stdin whole).

    :param max_concurrency: invocations in flight at once (the function's concurrency); an
        abandoned invocation keeps its place until the function answers it.
    """

    max_request_bytes: ClassVar[int]
    """The largest request the platform takes."""

    def __init__(self, *, max_concurrency: int = 16) -> None:
        if not isinstance(max_concurrency, int) or max_concurrency < 1:
            raise InvalidOptionsError("max_concurrency must be a positive integer")
        self.max_concurrency = max_concurrency

    @abc.abstractmethod
    async def _invoke(self, payload: bytes, wait: float) -> Any:
        """Send ``payload`` (a JSON request) to the function; its decoded JSON answer.

        :param wait: seconds to wait for the answer before giving up.
        :raises ServiceError: for what the platform refused, translated.
        """

    def where(self) -> str:
        """The function, as messages name it."""
        return self.name

    async def execute(
        self, code: str, options: ExecutionOptions | None = None, **overrides: Any
    ) -> ExecutionResult:
        options = merge_options(options, overrides)
        body = request_body(check_code(code), options)
        del body["environment"]
        body["filename"] = options.filename
        streaming = self.streams and bool(
            options.on_stdout or options.on_stderr or options.on_compile
        )
        if streaming:
            body["stream"] = True
        payload = json.dumps(body).encode()
        if len(payload) > self.max_request_bytes:
            raise InvalidOptionsError(
                f"the request is {len(payload)} bytes as JSON; {self.where()} takes at most"
                f" {self.max_request_bytes} (send smaller files)"
            )
        wait = options.timeout + options.compile_timeout + MARGIN
        if streaming:
            data = await self._invoke_streaming(payload, wait, options)
            return self._result(data, options.language)
        result = self._result(await self._invoke(payload, wait), options.language)
        if options.on_compile is not None and result.compile is not None:
            await on_compile(options, result.compile)
        for text, callback in (
            (result.stdout, options.on_stdout),
            (result.stderr, options.on_stderr),
        ):
            if callback is not None and text:
                await deliver(callback, text)
        return result

    streams: ClassVar[bool] = False
    """Whether the function can answer as the program runs (:meth:`_invoke_streaming`);
    otherwise the callbacks get the output when it answers."""

    async def _invoke_streaming(
        self, payload: bytes, wait: float, options: ExecutionOptions
    ) -> Any:
        """Like :meth:`_invoke`, for a request asking for a stream: the output goes to the
        options' callbacks as it arrives; returns the last line (the result or error)."""
        raise InvalidOptionsError(f"{self.where()} cannot answer as the program runs")

    def _result(self, data: Any, language: str) -> ExecutionResult:
        if isinstance(data, dict) and isinstance(data.get("result"), dict):
            try:
                result = ExecutionResult.from_dict(data["result"])
            except (TypeError, ValueError) as exc:
                raise ServiceError(f"{self.where()} answered a malformed result: {exc}") from None
            return dataclasses.replace(result, environment=self.name)
        self._raise(data, language)

    def _raise(self, data: Any, language: str) -> NoReturn:
        error = data.get("error") if isinstance(data, dict) else None
        if not isinstance(error, dict):
            raise ServiceError(f"{self.where()} answered something that is not a result")
        kind, message = error.get("type"), str(error.get("message"))
        if kind == "LanguageUnavailableError":
            raise LanguageUnavailableError(language, self.name, str(error.get("missing")))
        if kind in ("InvalidOptionsError", "UnknownLanguageError", "ResponseTooLarge"):
            raise InvalidOptionsError(message)
        if kind == "SpawnError":
            raise SpawnError(message)
        raise ServiceError(f"{self.where()}: {kind}: {message}")

    async def status(self) -> EnvironmentStatus:
        try:
            data = await self._invoke(b'{"action": "status"}', MARGIN)
        except RunEnvironmentError as exc:
            return EnvironmentStatus(name=self.name, ready=False, reason=str(exc))
        found = data.get("status") if isinstance(data, dict) else None
        if not isinstance(found, dict):
            reason = f"{self.where()} answered something that is not a status"
            return EnvironmentStatus(name=self.name, ready=False, reason=reason)
        languages = tuple(
            LanguageSupport(
                name=lang["name"],
                aliases=tuple(lang["aliases"]),
                available=lang["available"],
                command=lang.get("command"),
                missing=lang.get("missing"),
            )
            for lang in found.get("languages", ())
        )
        ready = any(lang.available for lang in languages)
        return EnvironmentStatus(
            name=self.name,
            ready=ready,
            reason=None if ready else f"{self.where()} can run no language",
            languages=languages,
            notes=(f"runs in {self.where()}",),
        )

    async def is_ready(self) -> bool:
        return (await self.status()).ready


def retry_after(value: str | None) -> float:
    """Seconds from a ``Retry-After`` header (1 when absent or not a number)."""
    try:
        return max(float(value), 0.0) if value is not None else 1.0
    except ValueError:
        return 1.0


async def on_compile(options: ExecutionOptions, compiled: CompileResult) -> None:
    """Call the options' ``on_compile`` (awaited when it is a coroutine function)."""
    if options.on_compile is not None:
        returned = options.on_compile(compiled)
        if inspect.isawaitable(returned):
            await returned
