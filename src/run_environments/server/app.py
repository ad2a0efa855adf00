"""The application: routers for each wire format, around one :class:`Service`."""

from __future__ import annotations

import contextlib
import hmac
import json
from collections.abc import AsyncIterator, Mapping
from importlib.metadata import version
from typing import Any

from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .._errors import (
    EnvironmentUnavailableError,
    InvalidOptionsError,
    RunEnvironmentError,
    UnknownEnvironmentError,
    UnknownLanguageError,
)
from .._registry import create_environment
from ..environments.base import RunEnvironment
from ..environments.sandbox import SandboxRunEnvironment
from . import e2b_envd, native, piston, sandboxfusion
from .admission import Overloaded
from .envd_session import Session
from .service import Service
from .settings import ServerSettings

PISTON = "/api/v2/"


def create_app(
    settings: ServerSettings | None = None,
    environments: Mapping[str, RunEnvironment] | None = None,
) -> FastAPI:
    """The HTTP application.

    :param settings: limits, token and environments (default: ``ServerSettings()``).
    :param environments: environment objects by name, instead of creating the ones the
        settings name (they are cleaned up when the application shuts down).
    """
    settings = settings or ServerSettings()
    if environments is None:
        environments = {name: create_environment(name) for name in settings.environments}
    service = Service(settings, environments)
    sessions: list[Session] = []

    def envd() -> Session:
        """The E2B-compatible session, made on first use, over the sandbox environment."""
        if not sessions:
            sandbox = next(
                (e for e in service.environments.values() if isinstance(e, SandboxRunEnvironment)),
                None,
            )
            if sandbox is None:
                raise EnvironmentUnavailableError("the E2B API needs the sandbox environment")
            sessions.append(Session(sandbox))
        return sessions[0]

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        try:
            yield
        finally:
            for session in sessions:
                await session.close()
            await service.cleanup()

    app = FastAPI(
        title="run-environments",
        version=version("run-environments"),
        description="Run code in interchangeable run environments.",
        lifespan=lifespan,
    )
    app.state.service = service
    app.state.envd = envd
    guarded = [Depends(_token_check(settings.token))]
    app.include_router(native.health)
    app.include_router(native.router, dependencies=guarded)
    app.include_router(sandboxfusion.router, dependencies=guarded)
    app.include_router(piston.router, dependencies=guarded)
    app.include_router(e2b_envd.router, dependencies=guarded)
    _handle_errors(app)
    app.add_middleware(BodyLimit, limit=settings.max_body_bytes)
    app.add_middleware(
        e2b_envd.EnvdDispatch,
        session=envd,
        check_token=lambda headers: _token_ok(settings.token, headers),
    )
    return app


def _offered(headers: Mapping[bytes, bytes]) -> str:
    authorization = headers.get(b"authorization", b"").decode(errors="replace")
    if authorization.lower().startswith("bearer "):
        return authorization[7:]
    for name in (b"x-api-key", b"x-access-token"):
        if name in headers:
            return headers[name].decode(errors="replace")
    return ""


def _token_ok(token: str | None, headers: Mapping[bytes, bytes]) -> bool:
    return token is None or hmac.compare_digest(_offered(headers).encode(), token.encode())


def _token_check(token: str | None) -> Any:
    async def check(request: Request) -> None:
        if not _token_ok(token, {k.encode(): v.encode() for k, v in request.headers.items()}):
            raise HTTPException(
                401, "a valid API token is required", headers={"WWW-Authenticate": "Bearer"}
            )

    return check


def error_body(request: Request, status: int, message: str, **extra: Any) -> JSONResponse:
    """An error in the format of the API the request was for."""
    headers = {"Retry-After": "1"} if status in (429, 503) else None
    if request.url.path.startswith(PISTON):
        return JSONResponse({"message": message}, status_code=status, headers=headers)
    return JSONResponse({"error": {"message": message, **extra}}, status, headers=headers)


def _status(exc: RunEnvironmentError) -> int:
    if isinstance(exc, InvalidOptionsError | UnknownEnvironmentError):
        return 422
    if isinstance(exc, EnvironmentUnavailableError):
        return 503
    return 422


def _handle_errors(app: FastAPI) -> None:
    @app.exception_handler(RunEnvironmentError)
    async def ours(request: Request, exc: RunEnvironmentError) -> JSONResponse:
        status = _status(exc)
        if request.url.path.startswith(PISTON) and status == 422:
            status = 400
        extra: dict[str, Any] = {"type": type(exc).__name__}
        if isinstance(exc, UnknownLanguageError):
            extra["supported"] = exc.supported
        return error_body(request, status, str(exc), **extra)

    @app.exception_handler(StarletteHTTPException)
    async def http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        if request.url.path.startswith(PISTON):
            return JSONResponse({"message": exc.detail}, exc.status_code, headers=exc.headers)
        return JSONResponse({"detail": exc.detail}, exc.status_code, headers=exc.headers)

    @app.exception_handler(Overloaded)
    async def overloaded(request: Request, exc: Overloaded) -> JSONResponse:
        request.app.state.service.metrics.rejected.inc()
        return error_body(request, 429, "too many executions are waiting; retry later")

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = "; ".join(_describe(error) for error in exc.errors())
        status = 400 if request.url.path.startswith(PISTON) else 422
        if request.url.path.startswith(PISTON):
            return error_body(request, status, problems)
        return JSONResponse({"detail": json.loads(json.dumps(exc.errors(), default=str))}, 422)


def _describe(error: Mapping[str, Any]) -> str:
    where = ".".join(str(part) for part in error.get("loc", ()) if part != "body")
    return f"{where}: {error.get('msg', 'invalid')}" if where else str(error.get("msg"))


class BodyLimit:
    """Refuse request bodies over ``limit`` bytes with 413, by header or as they stream in."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = dict(scope["headers"]).get(b"content-length", b"")
        if length.isdigit() and int(length) > self.limit:
            await self._refuse(scope, receive, send)
            return
        received = 0
        refused = False

        async def counted() -> Message:
            nonlocal received, refused
            message = await receive()
            if message["type"] == "http.request" and not refused:
                received += len(message.get("body", b""))
                if received > self.limit:
                    refused = True
                    await self._refuse(scope, receive, send)
                    return {"type": "http.disconnect"}  # the application stops reading
            return message

        async def unless_refused(message: Message) -> None:
            if not refused:
                await send(message)

        await self.app(scope, counted, unless_refused)

    async def _refuse(self, scope: Scope, receive: Receive, send: Send) -> None:
        message = f"the request body is larger than {self.limit} bytes"
        path = scope.get("path", "")
        body = {"message": message} if path.startswith(PISTON) else {"error": {"message": message}}
        await JSONResponse(body, 413)(scope, receive, send)
