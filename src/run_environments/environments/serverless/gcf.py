"""The Cloud Functions environment: each execution is one HTTPS request to the executor
deployed as a Google Cloud Function (``runenv deploy cloud-functions``), or to any URL that
serves it."""

from __future__ import annotations

import contextlib
import json
import os
import threading
import time
from collections.abc import Iterator
from typing import Any

import anyio
import httpx

from ..._errors import (
    AuthenticationError,
    EnvironmentUnavailableError,
    InvalidOptionsError,
    PlatformTimeoutError,
    RateLimitError,
    ServiceError,
    UnreachableError,
)
from ..._models import CompileResult, ExecutionOptions, deliver
from .base import ServerlessRunEnvironment, on_compile, retry_after

TOKEN_LIFE = 50 * 60.0
"""Seconds an identity token is used before a new one is fetched (Google's last an hour)."""


class CloudFunctionsRunEnvironment(ServerlessRunEnvironment):
    """Runs code in a Google Cloud Function running the executor.

    :param url: the function's URL (default: ``$RUNENV_CLOUD_FUNCTIONS_URL``).
    :param token: an identity token to send (default: ``$RUNENV_CLOUD_FUNCTIONS_TOKEN``;
        else, with ``auth`` on, one fetched by google-auth for the URL).
    :param auth: fetch an identity token from Google's credentials (None, the default:
        when credentials are found, else send none, as for a function that allows
        unauthenticated calls or a local ``functions-framework``).
    :param max_concurrency: requests in flight at once.
    """

    name = "cloud-functions"
    max_request_bytes = 32 * 1024 * 1024

    def __init__(
        self,
        url: str | None = None,
        *,
        token: str | None = None,
        auth: bool | None = None,
        max_concurrency: int = 16,
    ) -> None:
        super().__init__(max_concurrency=max_concurrency)
        self.url = url or os.environ.get("RUNENV_CLOUD_FUNCTIONS_URL") or ""
        self._token = token or os.environ.get("RUNENV_CLOUD_FUNCTIONS_TOKEN") or None
        self._auth = auth
        self._fetched: tuple[str, float] | None = None
        self._lock = threading.Lock()
        self._http: httpx.AsyncClient | None = None

    def where(self) -> str:
        return f"the function at {self.url}"

    def _identity_token(self) -> str | None:
        """A token from google-auth's credentials for the URL (blocking: a worker thread)."""
        with self._lock:
            if self._fetched is not None and self._fetched[1] > time.monotonic():
                return self._fetched[0]
            try:
                import google.auth.exceptions
                import google.auth.transport.requests
                import google.oauth2.id_token
            except ImportError as exc:
                if self._auth:
                    raise EnvironmentUnavailableError(
                        f"identity tokens need {exc.name}: pip install 'run-environments[gcp]'"
                    ) from None
                return None
            try:
                request = google.auth.transport.requests.Request()
                token: str = google.oauth2.id_token.fetch_id_token(request, self.url)  # type: ignore[no-untyped-call]
            except google.auth.exceptions.DefaultCredentialsError as exc:
                if self._auth:
                    raise AuthenticationError(f"no Google credentials: {exc}") from None
                return None
            except google.auth.exceptions.GoogleAuthError as exc:
                raise AuthenticationError(f"an identity token for {self.url}: {exc}") from None
            self._fetched = (token, time.monotonic() + TOKEN_LIFE)
            return token

    streams = True

    async def _headers(self) -> dict[str, str]:
        if not self.url:
            raise EnvironmentUnavailableError(
                "no function to call: give CloudFunctionsRunEnvironment(url=...) or set"
                " RUNENV_CLOUD_FUNCTIONS_URL (deploy one with `runenv deploy cloud-functions`)"
            )
        token = self._token
        if token is None and self._auth is not False:
            token = await anyio.to_thread.run_sync(self._identity_token)
        headers = {"Content-Type": "application/json"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        return headers

    @property
    def http(self) -> httpx.AsyncClient:
        if self._http is None:
            limits = httpx.Limits(max_connections=self.max_concurrency)
            self._http = httpx.AsyncClient(limits=limits, follow_redirects=False)
        return self._http

    async def _invoke(self, payload: bytes, wait: float) -> Any:
        headers = await self._headers()
        with self._translated(wait):
            response = await self.http.post(
                self.url, content=payload, headers=headers, timeout=httpx.Timeout(30, read=wait)
            )
        return self._answer(response)

    async def _invoke_streaming(
        self, payload: bytes, wait: float, options: ExecutionOptions
    ) -> Any:
        headers = await self._headers()
        with self._translated(wait), anyio.fail_after(wait):
            async with self.http.stream(
                "POST", self.url, content=payload, headers=headers, timeout=httpx.Timeout(30)
            ) as response:
                if response.status_code != 200:
                    await response.aread()
                    return self._answer(response)
                async for line in response.aiter_lines():
                    if not line:
                        continue  # the function's heartbeat while the program is silent
                    item = json.loads(line)
                    if "stdout" in item and options.on_stdout is not None:
                        await deliver(options.on_stdout, item["stdout"])
                    elif "stderr" in item and options.on_stderr is not None:
                        await deliver(options.on_stderr, item["stderr"])
                    elif "compile" in item:
                        await on_compile(options, CompileResult.from_dict(item["compile"]))
                    elif "result" in item or "error" in item:
                        return item
        raise UnreachableError(f"{self.where()}: the stream ended before the result")

    @contextlib.contextmanager
    def _translated(self, wait: float) -> Iterator[None]:
        """httpx's failures (and an overall wait that ran out) as the package's errors."""
        try:
            yield
        except (httpx.ReadTimeout, TimeoutError):
            raise UnreachableError(f"{self.where()} did not answer within {wait:g} s") from None
        except httpx.RemoteProtocolError as exc:
            raise UnreachableError(
                f"{self.where()} closed the connection without answering ({exc}): its instance"
                " stopped, for example at the platform's time limit"
            ) from None
        except httpx.HTTPError as exc:
            raise UnreachableError(f"{self.where()}: {exc or type(exc).__name__}") from None
        except ValueError as exc:  # a line that is not JSON
            raise ServiceError(f"{self.where()} answered something that is not JSON") from exc

    def _answer(self, response: httpx.Response) -> Any:
        status = response.status_code
        said = response.text[:500]
        if status == 200:
            try:
                return response.json()
            except ValueError:
                raise ServiceError(f"{self.where()} answered something that is not JSON") from None
        if status in (401, 403):
            raise AuthenticationError(f"{self.where()} refused the request: {said}", status)
        if status == 429:
            retry = retry_after(response.headers.get("retry-after"))
            raise RateLimitError(f"{self.where()}: too many requests: {said}", status, retry)
        if status == 413:
            raise InvalidOptionsError(f"{self.where()}: the request is too large: {said}")
        if status in (408, 504):
            raise PlatformTimeoutError(
                f"{self.where()} was stopped by the platform's time limit before it answered"
                f" (HTTP {status}): raise the function's timeout or ask for a shorter run"
            )
        if status == 404:
            raise EnvironmentUnavailableError(f"{self.where()}: no such function (HTTP 404)")
        raise ServiceError(f"{self.where()} answered HTTP {status}: {said}", status)

    async def cleanup(self) -> None:
        """Close the connections (requests under way run on in the function to their own
        timeout)."""
        if self._http is not None:
            http, self._http = self._http, None
            await http.aclose()
