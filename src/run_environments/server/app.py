"""The application: routers for each wire format, around one :class:`Service`."""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import socket
from collections.abc import AsyncIterator, Mapping
from importlib.metadata import version
from types import FrameType, ModuleType
from typing import Any

import uvicorn
from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException
from swagger_ui_bundle import swagger_ui_path
from uvicorn.protocols.http.auto import AutoHTTPProtocol

from .._errors import (
    EnvironmentUnavailableError,
    RunEnvironmentError,
)
from .._registry import create_environment
from ..environments.base import RunEnvironment
from ..environments.sandbox import SandboxRunEnvironment
from . import native, piston, sandboxfusion
from .admission import Overloaded
from .envd_session import Session, SessionLimits, Sessions
from .errors import ErrorFormats, Problem, problem_of
from .intake import Intake, guarded_protocol
from .service import Service
from .settings import ServerSettings


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
        docs_url=None,  # served below from the package's own copy of Swagger UI
        redoc_url=None,
    )
    _offline_docs(app)
    app.state.service = service
    app.state.envd = sessions
    app.state.check_token = lambda headers: _token_ok(settings.token, headers)
    guarded = [Depends(_token_check(settings.token))]
    app.include_router(native.health)
    app.include_router(native.router, dependencies=guarded)
    app.include_router(sandboxfusion.router, dependencies=guarded)
    app.include_router(piston.router, dependencies=guarded)
    app.include_router(piston.live)  # a WebSocket: it checks the token itself
    envd = _envd_api()
    if envd is not None:
        app.include_router(envd.router, dependencies=guarded)
    formats = ErrorFormats()
    formats.register(piston.PREFIX, piston.error_format)
    _handle_errors(app, formats)
    if envd is not None:
        app.add_middleware(
            envd.EnvdDispatch,
            sessions=sessions,
            check_token=lambda headers: _token_ok(settings.token, headers),
        )
    app.add_middleware(
        Intake,
        limit=settings.max_body_bytes,
        budget=settings.max_pending_bytes,
        deadline=settings.body_timeout,
        formats=formats,
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
    return uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        http=protocol,
        ws_max_size=settings.max_body_bytes,  # a WebSocket message: no larger than a body
        **options,
    )


class GracefulServer(uvicorn.Server):
    """uvicorn's server, ending the runs still under way itself just before the shutdown
    grace is over, so that each gets an answer (503, "shutting down") instead of a
    connection dropped by uvicorn's cancellation."""

    def __init__(self, config: uvicorn.Config, service: Service, grace: float) -> None:
        super().__init__(config)
        self.service = service
        self.grace = grace
        self.loop: asyncio.AbstractEventLoop | None = None

    async def serve(self, sockets: list[socket.socket] | None = None) -> None:
        self.loop = asyncio.get_running_loop()
        await super().serve(sockets)

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if not self.should_exit and self.loop is not None:
            cut = max(self.grace - CUT_MARGIN, 0.0)
            self.loop.call_soon_threadsafe(self.loop.call_later, cut, self.service.cut_runs)
        super().handle_exit(sig, frame)


CUT_MARGIN = 0.5
"""Seconds before the end of the shutdown grace at which runs under way are ended."""


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


def _envd_api() -> ModuleType | None:
    """E2B's envd API, when the ``e2b`` package (whose protocol stubs it speaks) is
    installed: ``pip install 'run-environments[server,e2b]'``."""
    try:
        from . import e2b_envd
    except ImportError:
        return None
    return e2b_envd


DOCS_ASSETS = "/docs/assets"


def _offline_docs(app: FastAPI) -> None:
    """``/docs``: Swagger UI from the ``swagger-ui-bundle`` package, so that it works on a
    machine with no internet (FastAPI's own page loads it from a CDN)."""
    app.mount(DOCS_ASSETS, StaticFiles(directory=swagger_ui_path), name="docs-assets")

    @app.get("/docs", include_in_schema=False)
    async def docs() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url=app.openapi_url or "/openapi.json",
            title=f"{app.title} API",
            swagger_js_url=f"{DOCS_ASSETS}/swagger-ui-bundle.js",
            swagger_css_url=f"{DOCS_ASSETS}/swagger-ui.css",
            swagger_favicon_url=f"{DOCS_ASSETS}/favicon-32x32.png",
        )


def _handle_errors(app: FastAPI, formats: ErrorFormats) -> None:
    @app.exception_handler(RunEnvironmentError)
    async def ours(request: Request, exc: RunEnvironmentError) -> JSONResponse:
        if isinstance(exc, Overloaded):
            request.app.state.service.metrics.rejected.inc()
        return formats.respond(request.url.path, problem_of(exc))

    @app.exception_handler(StarletteHTTPException)
    async def http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        headers = dict(exc.headers) if exc.headers else None
        problem = Problem(exc.status_code, str(exc.detail), headers=headers, http=True)
        return formats.respond(request.url.path, problem)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = "; ".join(_describe(error) for error in exc.errors())
        validation = [_plain(error) for error in exc.errors()]
        return formats.respond(request.url.path, Problem(422, problems, validation=validation))


def _plain(error: Mapping[str, Any]) -> dict[str, Any]:
    """A validation error as strict JSON (its input may be NaN, bytes or anything else)."""
    plain = {k: v for k, v in error.items() if k not in ("input", "ctx", "url")}
    text = json.dumps(error.get("input"), default=repr, allow_nan=True)
    plain["input"] = text if len(text) <= 200 else text[:200] + "..."
    return plain


def _describe(error: Mapping[str, Any]) -> str:
    where = ".".join(str(part) for part in error.get("loc", ()) if part != "body")
    return f"{where}: {error.get('msg', 'invalid')}" if where else str(error.get("msg"))
