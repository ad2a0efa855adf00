"""The application: routers for each wire format, around one :class:`Service`."""

from __future__ import annotations

import contextlib
import hmac
import json
from collections.abc import AsyncIterator, Mapping
from importlib.metadata import version
from typing import Any

import uvicorn
from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from uvicorn.protocols.http.auto import AutoHTTPProtocol

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
from .envd_session import Session, SessionLimits, Sessions
from .intake import Intake, guarded_protocol
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
    limits = SessionLimits(quota=settings.session_quota, process_seconds=settings.max_timeout)

    def session() -> Session:
        """A new E2B-compatible session over the sandbox environment."""
        sandbox = next(
            (e for e in service.environments.values() if isinstance(e, SandboxRunEnvironment)),
            None,
        )
        if sandbox is None:
            raise EnvironmentUnavailableError("the E2B API needs the sandbox environment")
        return Session(sandbox, service.admission, limits)

    sessions = Sessions(session, settings.max_sessions)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        try:
            yield
        finally:
            await sessions.close()
            await service.cleanup()

    app = FastAPI(
        title="run-environments",
        version=version("run-environments"),
        description="Run code in interchangeable run environments.",
        lifespan=lifespan,
    )
    app.state.service = service
    app.state.envd = sessions
    guarded = [Depends(_token_check(settings.token))]
    app.include_router(native.health)
    app.include_router(native.router, dependencies=guarded)
    app.include_router(sandboxfusion.router, dependencies=guarded)
    app.include_router(piston.router, dependencies=guarded)
    app.include_router(e2b_envd.router, dependencies=guarded)
    _handle_errors(app)
    app.add_middleware(
        e2b_envd.EnvdDispatch,
        sessions=sessions,
        check_token=lambda headers: _token_ok(settings.token, headers),
    )
    app.add_middleware(
        Intake,
        limit=settings.max_body_bytes,
        budget=settings.max_pending_bytes,
        deadline=settings.body_timeout,
        error_body=_error_json,
    )
    return app


def server_config(app: FastAPI, settings: ServerSettings, **options: Any) -> uvicorn.Config:
    """uvicorn's configuration for ``app``: its HTTP protocol closes half-sent requests and
    connections past the server's maximum."""
    protocol = guarded_protocol(
        AutoHTTPProtocol,
        header_timeout=settings.header_timeout,
        max_connections=settings.max_connections,
    )
    return uvicorn.Config(app, host=settings.host, port=settings.port, http=protocol, **options)


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


def _error_json(path: str, status: int, message: str, **extra: Any) -> dict[str, Any]:
    if path.startswith(PISTON):
        return {"message": message}
    return {"error": {"message": message, **extra}}


def error_body(request: Request, status: int, message: str, **extra: Any) -> JSONResponse:
    """An error in the format of the API the request was for."""
    headers = {"Retry-After": "1"} if status in (429, 503) else None
    return JSONResponse(_error_json(request.url.path, status, message, **extra), status, headers)


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
        return JSONResponse({"detail": [_plain(error) for error in exc.errors()]}, 422)


def _plain(error: Mapping[str, Any]) -> dict[str, Any]:
    """A validation error as strict JSON (its input may be NaN, bytes or anything else)."""
    plain = {k: v for k, v in error.items() if k not in ("input", "ctx", "url")}
    text = json.dumps(error.get("input"), default=repr, allow_nan=True)
    plain["input"] = text if len(text) <= 200 else text[:200] + "..."
    return plain


def _describe(error: Mapping[str, Any]) -> str:
    where = ".".join(str(part) for part in error.get("loc", ()) if part != "body")
    return f"{where}: {error.get('msg', 'invalid')}" if where else str(error.get("msg"))
