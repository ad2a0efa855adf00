"""The Lambda environment: each execution is one synchronous invocation of the executor
deployed as an AWS Lambda function (``runenv deploy lambda``)."""

from __future__ import annotations

import json
import os
import re
import threading
from typing import Any

import anyio
import boto3
import botocore.config
import botocore.exceptions

from ..._errors import (
    AuthenticationError,
    EnvironmentUnavailableError,
    InvalidOptionsError,
    PlatformTimeoutError,
    RateLimitError,
    ServiceError,
    UnreachableError,
)
from .base import ServerlessRunEnvironment, retry_after

MAX_READ = 960.0
"""Seconds botocore waits for an answer: past Lambda's longest function timeout (900 s)."""

_THROTTLED = {"TooManyRequestsException", "ThrottlingException", "EC2ThrottledException"}
_DENIED = {
    "AccessDeniedException",
    "UnrecognizedClientException",
    "InvalidSignatureException",
    "ExpiredTokenException",
    "KMSAccessDeniedException",
}
_TIMED_OUT = re.compile(r"Task timed out after [\d.]+ seconds")


class LambdaRunEnvironment(ServerlessRunEnvironment):
    """Runs code in an AWS Lambda function running the executor.

    :param function: the function's name or ARN, ``name:alias`` for an alias or version
        (default: ``$RUNENV_LAMBDA_FUNCTION``).
    :param region: default: the AWS configuration's (``$AWS_REGION``, the profile).
    :param profile: a profile of the AWS configuration (default: ``$AWS_PROFILE``).
    :param endpoint_url: another endpoint of the Lambda API (``$RUNENV_LAMBDA_ENDPOINT_URL``),
        such as a local emulator.
    :param aws_access_key_id: with ``aws_secret_access_key`` (and ``aws_session_token``):
        credentials to use instead of the usual chain (variables, profile, instance role).
    :param max_concurrency: invocations in flight at once (default 16; the function's
        reserved or the account's concurrency is the real bound: past it, Lambda throttles,
        botocore retries, and what still fails is a :class:`RateLimitError`).
    :param max_attempts: attempts of an invoke that is throttled or meets a passing error
        (botocore's standard retries, with backoff).
    """

    name = "lambda"
    max_request_bytes = 6 * 1024 * 1024

    def __init__(
        self,
        function: str | None = None,
        *,
        region: str | None = None,
        profile: str | None = None,
        endpoint_url: str | None = None,
        aws_access_key_id: str | None = None,
        aws_secret_access_key: str | None = None,
        aws_session_token: str | None = None,
        max_concurrency: int = 16,
        max_attempts: int = 5,
    ) -> None:
        super().__init__(max_concurrency=max_concurrency)
        self.max_attempts = max_attempts
        self.function = function or os.environ.get("RUNENV_LAMBDA_FUNCTION") or ""
        self.region = region
        self.profile = profile
        self.endpoint_url = endpoint_url or os.environ.get("RUNENV_LAMBDA_ENDPOINT_URL") or None
        self._credentials = {
            "aws_access_key_id": aws_access_key_id,
            "aws_secret_access_key": aws_secret_access_key,
            "aws_session_token": aws_session_token,
        }
        self._client: Any = None
        self._lock = threading.Lock()
        self._slots = threading.BoundedSemaphore(max_concurrency)
        """Held by the thread of each invocation to its end (an execute that was cancelled
        leaves its invocation running in the function, and in its place)."""

    def where(self) -> str:
        return f"Lambda function {self.function!r}"

    def _lambda(self) -> Any:
        """The boto3 client (made on first use, in a worker thread: it reads files)."""
        with self._lock:
            if self._client is None:
                try:
                    session = boto3.session.Session(
                        profile_name=self.profile, region_name=self.region, **self._credentials
                    )
                except botocore.exceptions.ProfileNotFound as exc:
                    raise AuthenticationError(str(exc)) from None
                config = botocore.config.Config(
                    read_timeout=MAX_READ,
                    connect_timeout=10,
                    retries={"mode": "standard", "max_attempts": self.max_attempts},
                    max_pool_connections=self.max_concurrency,
                )
                try:
                    self._client = session.client(
                        "lambda", endpoint_url=self.endpoint_url, config=config
                    )
                except botocore.exceptions.NoRegionError:
                    raise EnvironmentUnavailableError(
                        "no AWS region: give region= or set AWS_REGION (or a profile's region)"
                    ) from None
            return self._client

    async def _invoke(self, payload: bytes, wait: float) -> Any:
        if not self.function:
            raise EnvironmentUnavailableError(
                "no function to invoke: give LambdaRunEnvironment(function=...) or set"
                " RUNENV_LAMBDA_FUNCTION (deploy one with `runenv deploy lambda`)"
            )
        arguments: dict[str, Any]
        name, qualifier = self.function, ""
        if not name.startswith("arn:"):  # an ARN names its qualifier itself
            name, _, qualifier = name.partition(":")
        arguments = {"FunctionName": name, "InvocationType": "RequestResponse", "Payload": payload}
        if qualifier:
            arguments["Qualifier"] = qualifier

        abandoned = threading.Event()

        def call() -> tuple[dict[str, Any], bytes]:
            with self._slots:
                if abandoned.is_set():  # cancelled while waiting for its place
                    return {}, b""
                response = self._lambda().invoke(**arguments)
                return response, response["Payload"].read()

        with anyio.move_on_after(wait) as scope:
            try:
                response, body = await anyio.to_thread.run_sync(call, abandon_on_cancel=True)
            except botocore.exceptions.ClientError as exc:
                error = self._translated(exc)
                raise error from None
            except (
                botocore.exceptions.NoCredentialsError,
                botocore.exceptions.PartialCredentialsError,
            ) as exc:
                raise AuthenticationError(f"{self.where()}: {exc}") from None
            except botocore.exceptions.BotoCoreError as exc:
                if isinstance(exc, botocore.exceptions.ParamValidationError):
                    raise InvalidOptionsError(f"{self.where()}: {exc}") from None
                raise UnreachableError(f"{self.where()}: {exc}") from None
            finally:
                abandoned.set()
        if scope.cancelled_caught:
            raise UnreachableError(f"{self.where()} did not answer within {wait:g} s")
        return self._answer(response, body)

    def _answer(self, response: dict[str, Any], body: bytes) -> Any:
        text = body.decode("utf-8", "replace")
        try:
            data = json.loads(text)
        except ValueError:
            data = None
        failed = isinstance(data, dict) and "errorMessage" in data  # the emulator's way
        if response.get("FunctionError") or data is None or failed:
            message = data.get("errorMessage", text) if isinstance(data, dict) else text
            kind = data.get("errorType", "") if isinstance(data, dict) else ""
            timed_out = _TIMED_OUT.search(str(message))
            if timed_out:
                raise PlatformTimeoutError(
                    f"{self.where()} was stopped by Lambda's time limit before it answered"
                    f" ({timed_out.group()}): raise the function's timeout or ask for a"
                    " shorter run"
                )
            if "ResponseSizeTooLarge" in kind or "Response payload size" in str(message):
                raise InvalidOptionsError(
                    f"{self.where()}: the result was larger than Lambda returns: ask for less"
                    f" output or fewer files ({message})"
                )
            raise ServiceError(f"{self.where()} failed: {kind or 'error'}: {message}")
        return data

    def _translated(self, exc: botocore.exceptions.ClientError) -> Exception:
        error = exc.response.get("Error", {})
        code = str(error.get("Code", ""))
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        message = f"{self.where()}: {code}: {error.get('Message', exc)}"
        if code in _THROTTLED or status == 429:
            headers = exc.response.get("ResponseMetadata", {}).get("HTTPHeaders", {})
            return RateLimitError(message, status, retry_after(headers.get("retry-after")))
        if code in _DENIED or status in (401, 403):
            return AuthenticationError(message, status)
        if code == "RequestTooLargeException" or status == 413:
            return InvalidOptionsError(message)
        if code == "ResourceNotFoundException":
            return EnvironmentUnavailableError(f"{message} (deploy it with `runenv deploy lambda`)")
        return ServiceError(message, status)

    async def cleanup(self) -> None:
        """Close the client's connections (invocations under way run on in the function to
        their own timeout)."""
        with self._lock:
            client, self._client = self._client, None
        if client is not None:
            client.close()
