"""A client of the native HTTP API of ``runenv serve``."""

from __future__ import annotations

import inspect
import json
import os
from types import TracebackType
from typing import Any

import httpx

from ._errors import (
    AuthenticationError,
    EnvironmentUnavailableError,
    InvalidOptionsError,
    RateLimitError,
    ServiceError,
    SpawnError,
    UnknownEnvironmentError,
    UnknownLanguageError,
    UnreachableError,
)
from ._models import ExecutionOptions, ExecutionResult, deliver
from ._sync import portal
from ._wire import request_body
from .environments.base import check_code, merge_options

DEFAULT_URL = "http://127.0.0.1:8000"
MARGIN = 30.0
"""Seconds a response may take beyond the run's own time limits."""


def _raise_for(response_status: int, data: Any, headers: httpx.Headers | None = None) -> None:
    error: dict[str, Any] = data.get("error") or {} if isinstance(data, dict) else {}
    message = error.get("message") or _said(data) or f"HTTP status {response_status}"
    kind = error.get("type")
    if response_status == 401:
        raise AuthenticationError(message, response_status)
    if response_status == 429 or kind == "Overloaded":
        retry = float(headers.get("retry-after", 1)) if headers is not None else 1.0
        raise RateLimitError(message, response_status, retry)
    if kind == "UnknownLanguageError":
        raise UnknownLanguageError(str(error.get("language")), list(error.get("supported", [])))
    if kind == "UnknownEnvironmentError":
        raise UnknownEnvironmentError(str(error.get("environment")), list(error.get("known", [])))
    if kind == "SpawnError":
        raise SpawnError(message)
    if (
        kind in ("EnvironmentUnavailableError", "LanguageUnavailableError")
        or response_status == 503
    ):
        raise EnvironmentUnavailableError(message)
    if response_status in (400, 413, 422):
        raise InvalidOptionsError(message)
    raise ServiceError(f"the service answered {response_status}: {message}", response_status)


def _said(data: Any) -> str | None:
    """The message of an answer in another shape (``{"detail": ...}``), or None."""
    detail = data.get("detail") if isinstance(data, dict) else None
    if isinstance(detail, str):
        return detail
    if isinstance(detail, list):
        return "; ".join(str(d.get("msg", d)) if isinstance(d, dict) else str(d) for d in detail)
    return None


class Client:
    """Talks to ``runenv serve`` over HTTP; use as an async context manager.

    :param url: the server (default: ``$RUNENV_URL``, else http://127.0.0.1:8000).
    :param token: the API token (default: ``$RUNENV_TOKEN``).
    """

    def __init__(self, url: str | None = None, *, token: str | None = None) -> None:
        self.url = url or os.environ.get("RUNENV_URL", DEFAULT_URL)
        token = token if token is not None else os.environ.get("RUNENV_TOKEN")
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._http = httpx.AsyncClient(base_url=self.url, headers=headers, timeout=60)

    async def execute(
        self,
        code: str,
        options: ExecutionOptions | None = None,
        *,
        environment: str | None = None,
        **overrides: Any,
    ) -> ExecutionResult:
        """Run ``code`` on the server; with output callbacks, the output streams.

        :raises RunEnvironmentError: the server's refusal, translated; or
            :class:`UnreachableError` when it cannot be reached or the connection drops.
        """
        options = merge_options(options, overrides)
        body = request_body(check_code(code), options, environment)
        result = await self._execute(body, options)
        if options.on_compile is not None and result.compile is not None:
            returned = options.on_compile(result.compile)  # the server says it at the end
            if inspect.isawaitable(returned):
                await returned
        return result

    async def _execute(self, body: dict[str, Any], options: ExecutionOptions) -> ExecutionResult:
        timeout = httpx.Timeout(60, read=options.timeout + options.compile_timeout + MARGIN)
        try:
            if options.on_stdout is None and options.on_stderr is None:
                response = await self._http.post("/v1/execute", json=body, timeout=timeout)
                data = response.json()
                if response.status_code != 200:
                    _raise_for(response.status_code, data, response.headers)
                return ExecutionResult.from_dict(data)
            return await self._stream(body, options, timeout)
        except httpx.HTTPError as exc:
            raise UnreachableError(f"{self.url}: {exc or type(exc).__name__}") from exc
        except (json.JSONDecodeError, TypeError, KeyError) as exc:
            raise ServiceError(f"{self.url} answered something that is not a result") from exc

    async def _stream(
        self, body: dict[str, Any], options: ExecutionOptions, timeout: httpx.Timeout
    ) -> ExecutionResult:
        async with self._http.stream(
            "POST", "/v1/execute/stream", json=body, timeout=timeout
        ) as response:
            if response.status_code != 200:
                await response.aread()
                _raise_for(response.status_code, response.json(), response.headers)
            async for line in response.aiter_lines():
                if not line:
                    continue
                item = json.loads(line)
                for stream, callback in (
                    ("stdout", options.on_stdout),
                    ("stderr", options.on_stderr),
                ):
                    if stream in item and callback is not None:
                        await deliver(callback, item[stream])
                if "result" in item:
                    return ExecutionResult.from_dict(item["result"])
                if "error" in item:
                    _raise_for(200, item)
        raise UnreachableError(f"{self.url}: the connection ended before the result")

    async def languages(self) -> dict[str, Any]:
        """``GET /v1/languages``."""
        return await self._get("/v1/languages")

    async def health(self) -> dict[str, Any]:
        """``GET /healthz`` (a 503 answer is returned, not raised)."""
        try:
            response = await self._http.get("/healthz")
            data: dict[str, Any] = response.json()
            return data
        except httpx.HTTPError as exc:
            raise UnreachableError(f"{self.url}: {exc or type(exc).__name__}") from exc

    async def _get(self, path: str) -> dict[str, Any]:
        try:
            response = await self._http.get(path)
        except httpx.HTTPError as exc:
            raise UnreachableError(f"{self.url}: {exc or type(exc).__name__}") from exc
        data: dict[str, Any] = response.json()
        if response.status_code != 200:
            _raise_for(response.status_code, data, response.headers)
        return data

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()


class SyncClient:
    """:class:`Client` for synchronous code, through the package's one event-loop thread."""

    def __init__(self, url: str | None = None, *, token: str | None = None) -> None:
        self._client: Client = portal().call(self._make, url, token)

    @staticmethod
    async def _make(url: str | None, token: str | None) -> Client:
        return Client(url, token=token)

    def execute(
        self,
        code: str,
        options: ExecutionOptions | None = None,
        *,
        environment: str | None = None,
        **overrides: Any,
    ) -> ExecutionResult:
        """Run ``code`` on the server; see :meth:`Client.execute`."""
        return portal().call(
            lambda: self._client.execute(code, options, environment=environment, **overrides)
        )

    def languages(self) -> dict[str, Any]:
        return portal().call(self._client.languages)

    def health(self) -> dict[str, Any]:
        return portal().call(self._client.health)

    def close(self) -> None:
        portal().call(self._client.aclose)

    def __enter__(self) -> SyncClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


__all__ = ["Client", "SyncClient"]
