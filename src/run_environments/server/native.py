"""The native API: ``/v1/execute`` (and its streaming form), ``/v1/languages``, health,
metrics."""

from __future__ import annotations

import base64
import binascii
import contextlib
import json
import math
from typing import Annotated, Any

import anyio
from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel, ConfigDict, Field
from starlette.types import Receive, Scope, Send

from .._errors import InvalidOptionsError, RunEnvironmentError
from .._models import (
    DEFAULT_COMPILE_TIMEOUT,
    DEFAULT_MAX_OUTPUT_BYTES,
    DEFAULT_TIMEOUT,
    ExecutionOptions,
    Limits,
)
from .admission import Overloaded
from .service import Seconds, Service, service_of

router = APIRouter(tags=["native"])
health = APIRouter(tags=["native"])

Positive = Annotated[int, Field(gt=0)]


class LimitsModel(BaseModel):
    """Resource limits; omitted fields take the environment's defaults."""

    model_config = ConfigDict(extra="forbid")
    memory: Positive | None = Field(None, description="bytes")
    cpu_time: Seconds | None = None
    processes: Positive | None = None
    disk: Positive | None = Field(None, description="bytes")
    open_files: Positive | None = None


class ExecuteRequest(BaseModel):
    """The ExecutionOptions fields, plus the code and the environment to run it in."""

    model_config = ConfigDict(extra="forbid")
    code: str
    environment: str | None = Field(None, description="default: the server's environment")
    language: str = "python"
    timeout: Seconds | None = Field(
        None, description=f"default {DEFAULT_TIMEOUT:g}, at most the server's limit"
    )
    cwd: str | None = None
    env: dict[str, str] = {}
    stdin: str | None = None
    stdin_base64: str | None = Field(None, description="binary standard input")
    args: list[str] = []
    files: dict[str, str] = Field({}, description="path -> text")
    files_base64: dict[str, str] = Field({}, description="path -> base64 content")
    max_output_bytes: Annotated[int, Field(ge=0, description="at most the server's limit")] = (
        DEFAULT_MAX_OUTPUT_BYTES
    )
    compile_timeout: Seconds | None = Field(
        None, description=f"default {DEFAULT_COMPILE_TIMEOUT:g}, at most the server's limit"
    )
    limits: LimitsModel | None = None
    fetch_files: list[str] = []

    def options(self, service: Service, **callbacks: Any) -> ExecutionOptions:
        if self.stdin is not None and self.stdin_base64 is not None:
            raise InvalidOptionsError("give stdin or stdin_base64, not both")
        files: dict[str, str | bytes] = dict(self.files)
        files.update({path: _decode(data, path) for path, data in self.files_base64.items()})
        stdin = _decode(self.stdin_base64, "stdin") if self.stdin_base64 else self.stdin
        return ExecutionOptions(
            language=self.language,
            timeout=self.timeout or service.default_timeout(DEFAULT_TIMEOUT),
            cwd=self.cwd,
            env=self.env,
            stdin=stdin,
            args=self.args,
            files=files,
            max_output_bytes=self.max_output_bytes,
            compile_timeout=self.compile_timeout
            or service.default_timeout(DEFAULT_COMPILE_TIMEOUT),
            limits=Limits(**self.limits.model_dump()) if self.limits else Limits(),
            fetch_files=self.fetch_files,
            **callbacks,
        )


def _decode(data: str, what: str) -> bytes:
    try:
        return base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidOptionsError(f"{what} is not valid base64") from None


class CompileModel(BaseModel):
    success: bool
    stdout: str
    stderr: str
    exit_code: int | None
    execution_time: float
    error: str | None
    timed_out: bool
    signal: str | None
    stdout_truncated: bool
    stderr_truncated: bool
    oom_killed: bool
    cpu_time: float | None
    memory_peak: int | None


class ResultModel(CompileModel):
    """An ExecutionResult; fetched ``files`` are base64."""

    language: str
    environment: str
    compile: CompileModel | None
    files: dict[str, str]


@router.post("/v1/execute", response_model=ResultModel)
async def execute(body: ExecuteRequest, request: Request) -> JSONResponse:
    """Run code and return the ExecutionResult."""
    service = service_of(request)
    result = await service.execute(body.code, body.options(service), body.environment)
    return JSONResponse(result.to_dict())


@router.post(
    "/v1/execute/stream",
    response_class=Response,
    responses={200: {"content": {"application/x-ndjson": {}}}},
)
async def execute_stream(body: ExecuteRequest, request: Request) -> Response:
    """Run code, sending NDJSON lines as output arrives: ``{"stdout": text}``,
    ``{"stderr": text}``, then ``{"result": ExecutionResult}`` (or ``{"error": {...}}``).
    Closing the connection cancels the run."""
    service = service_of(request)
    service.check(body.options(service))  # refuse bad options with 422 before the stream starts
    service.environment(body.environment)
    return _Streamed(service, body)


SEND_GRACE = 10.0
"""Seconds a streaming client has to read what is left once its run is over, at least."""


class _Streamed(Response):
    """NDJSON lines as output arrives. The run never waits for the client: lines queue (they
    are bounded by the run's output bound) and a sender task writes them; once the run is
    over and its slot free, the client gets the run's timeout (or :data:`SEND_GRACE`) to
    read the rest."""

    media_type = "application/x-ndjson"

    def __init__(self, service: Service, request: ExecuteRequest) -> None:
        super().__init__(media_type=self.media_type)
        self.service = service
        self.request = request

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        lines, pending = anyio.create_memory_object_stream[bytes](math.inf)

        def line(item: dict[str, Any]) -> None:
            lines.send_nowait((json.dumps(item) + "\n").encode())

        def out(text: str) -> None:
            line({"stdout": text})

        def err(text: str) -> None:
            line({"stderr": text})

        sent = anyio.Event()

        async def sender() -> None:
            async with pending:
                async for data in pending:
                    await send({"type": "http.response.body", "body": data, "more_body": True})
            await send({"type": "http.response.body", "body": b"", "more_body": False})
            sent.set()

        env = self.service.environment(self.request.environment)
        options = self.request.options(self.service, on_stdout=out, on_stderr=err)
        slot = contextlib.AsyncExitStack()
        try:
            await slot.enter_async_context(self.service.admission.slot())  # 429 before the 200
        except Overloaded:
            self.service.metrics.rejected.inc()
            refusal = {"error": {"type": "Overloaded", "message": "retry later"}}
            await JSONResponse(refusal, 429, headers={"Retry-After": "1"})(scope, receive, send)
            return
        async with slot, anyio.create_task_group() as tg:
            headers = [(b"content-type", self.media_type.encode())]  # no length
            await send({"type": "http.response.start", "status": 200, "headers": headers})
            tg.start_soon(sender)
            try:
                result = await self.service.run(env, self.request.code, options)
                line({"result": result.to_dict()})
            except RunEnvironmentError as exc:
                line({"error": {"type": type(exc).__name__, "message": str(exc)}})
            finally:
                lines.close()
                await slot.aclose()  # the run is over: its slot serves others while we send
            with anyio.move_on_after(max(options.timeout, SEND_GRACE)):
                await sent.wait()
            tg.cancel_scope.cancel()  # a client that does not read in time is dropped


@router.get("/v1/languages")
async def languages(request: Request) -> dict[str, Any]:
    """Each environment this server offers, with its languages and what is missing."""
    found = {}
    for name, env in service_of(request).environments.items():
        status = await env.status()
        found[name] = {
            "ready": status.ready,
            "reason": status.reason,
            "languages": [
                {
                    "name": lang.name,
                    "aliases": list(lang.aliases),
                    "available": lang.available,
                    "missing": lang.missing,
                }
                for lang in status.languages
            ],
        }
    return {"default": service_of(request).settings.environment, "environments": found}


@health.get("/healthz")
async def healthz(request: Request) -> JSONResponse:
    """Whether the server can run code: 200 when its default environment is ready."""
    service = service_of(request)
    ready = {name: await env.is_ready() for name, env in service.environments.items()}
    ok = ready[service.settings.environment]
    return JSONResponse(
        {"status": "ok" if ok else "unavailable", "ready": ready}, 200 if ok else 503
    )


@router.get("/metrics", response_class=Response)
async def metrics(request: Request) -> Response:
    """Prometheus metrics: executions by status and language, durations, queue, in flight."""
    registry = service_of(request).metrics.registry
    return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)
