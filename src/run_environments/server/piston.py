"""Piston v2: ``GET /api/v2/runtimes``, ``GET /api/v2/packages``, ``POST /api/v2/execute``
and the interactive WebSocket ``/api/v2/connect``.

Timeouts and CPU times are milliseconds, memory limits bytes (-1: none); errors are
``{"message": ...}`` with 400, and a body that is not JSON gets 415.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import functools
import json
import re
import shlex
import signal
import weakref
from collections.abc import Callable, Coroutine, Mapping
from typing import Annotated, Any, Literal

import anyio
import anyio.abc
from fastapi import APIRouter, Depends, HTTPException, Request, WebSocket, WebSocketDisconnect
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field, JsonValue, ValidationError

from .._errors import InvalidOptionsError, RunEnvironmentError
from .._languages import LANGUAGES, get_language
from .._live import LiveInput
from .._models import CompileResult, ExecutionOptions, ExecutionResult, Limits
from ..profiles import parse_probe, probe_script
from .errors import Problem
from .service import Service, service_of

router = APIRouter(tags=["Piston"])
PREFIX = "/api/v2/"
"""The paths whose errors this router formats."""


def error_format(problem: Problem) -> JSONResponse:
    """Piston's errors: ``{"message": ...}``, with 400 where others answer 422."""
    status = 400 if problem.status == 422 else problem.status
    return JSONResponse({"message": problem.message}, status, headers=problem.headers)


VERSION = re.compile(r"\d+\.\d+(?:\.\d+)?")

PISTON: dict[str, tuple[str, str | None, tuple[str, ...]]] = {
    "python": ("python", None, ("py", "py3", "python3")),
    "javascript": ("javascript", "node", ("node-javascript", "node-js", "javascript", "js",
                                          "deno-js")),
    "typescript": ("typescript", None, ("ts", "node-ts", "tsc", "typescript5", "ts5", "deno",
                                        "deno-ts")),
    "bash": ("bash", None, ("sh",)),
    "ruby": ("ruby", None, ("rb",)),
    "perl": ("perl", None, ("pl",)),
    "php": ("php", None, ()),
    "lua": ("lua", None, ()),
    "c": ("c", "gcc", ("gcc",)),
    "cpp": ("c++", "gcc", ("cpp", "g++")),
    "go": ("go", None, ("go", "golang")),
    "rust": ("rust", None, ("rs",)),
    "java": ("java", None, ()),
    "csharp": ("csharp", "mono", ("mono", "mono-csharp", "mono-c#", "mono-cs", "c#", "cs")),
    "haskell": ("haskell", None, ("haskell", "hs")),
    "ocaml": ("ocaml", None, ("ml",)),
    "fortran": ("fortran", "gcc", ("fortran", "f90")),
    "pascal": ("pascal", "freepascal", ("freepascal", "pp", "pas")),
    "d": ("d", "gcc", ("gdc",)),
    "r": ("rscript", None, ("r",)),
    "racket": ("racket", None, ("rkt",)),
    "erlang": ("erlang", None, ("erlang", "erl", "escript")),
    "elixir": ("elixir", None, ("elixir", "exs")),
    "awk": ("awk", "gawk", ("gawk",)),
    "kotlin": ("kotlin", None, ("kt",)),
    "scala": ("scala", None, ("sc",)),
    "groovy": ("groovy", None, ("groovy", "gvy")),
    "clojure": ("clojure", None, ("clojure", "clj")),
    "sql": ("sqlite3", None, ("sqlite", "sql")),
}  # fmt: skip
"""Our language -> Piston's name for it, the Piston package that provides it (when not of
the same name), and the aliases Piston's packages declare for it."""
_BY_PISTON = {name: ours for ours, (piston, _, aliases) in PISTON.items()
              for name in (piston, *aliases)}  # fmt: skip
_VERSIONED = re.compile(r"(python|typescript|ts|node|php|ruby|lua)[0-9][0-9.]*")


def piston_language(name: str) -> str:
    """Our language for a name a Piston client sends: Piston's names and aliases (``c++``,
    ``g++``, ``py3``, ``node-js``, ``deno``, ``python3.12``...), then our own.

    :raises InvalidOptionsError: for a name neither knows.
    """
    key = name.strip().lower()
    if key in _BY_PISTON:
        return _BY_PISTON[key]
    versioned = _VERSIONED.fullmatch(key)
    if versioned:
        return get_language(versioned.group(1)).name
    return get_language(key).name


Milliseconds = Annotated[float, Field(gt=0, allow_inf_nan=False)]


async def json_body(request: Request) -> None:
    content_type = request.headers.get("content-type", "")
    if not content_type.split(";")[0].strip().lower() == "application/json":
        raise HTTPException(415, "the request body must be application/json")


class PistonFile(BaseModel):
    name: str | None = None
    content: str
    encoding: Literal["utf8", "base64", "hex"] = "utf8"

    def data(self) -> str | bytes:
        try:
            if self.encoding == "base64":
                return base64.b64decode(self.content, validate=True)
            if self.encoding == "hex":
                return bytes.fromhex(self.content)
        except (binascii.Error, ValueError):
            raise InvalidOptionsError(f"file {self.name!r} is not valid {self.encoding}") from None
        return self.content


NAMES: list[JsonValue] = [
    *sorted({n for lang in LANGUAGES for n in (lang.name, *lang.aliases)} | set(_BY_PISTON))
]


class ExecuteRequest(BaseModel):
    language: str = Field(json_schema_extra={"enum": NAMES})
    version: str = "*"
    files: list[PistonFile] = Field(min_length=1)
    stdin: str = ""
    args: list[str] = []
    compile_timeout: Milliseconds | None = Field(
        None, description="default 10000, within the server's"
    )
    run_timeout: Milliseconds | None = Field(None, description="default 3000, within the server's")
    compile_cpu_time: Milliseconds | None = None
    run_cpu_time: Milliseconds | None = None
    compile_memory_limit: int = -1
    run_memory_limit: int = -1


class Stage(BaseModel):
    stdout: str
    stderr: str
    output: str
    code: int | None
    signal: str | None
    message: str | None
    status: Literal["RE", "SG", "TO", "OL", "EL", "XX"] | None
    cpu_time: float | None
    wall_time: float
    memory: int | None


class ExecuteResponse(BaseModel):
    language: str
    version: str
    run: Stage
    compile: Stage | None = None


class Runtime(BaseModel):
    language: str
    version: str
    aliases: list[str]
    runtime: str | None = None


async def _version(service: Service, command: tuple[str, ...]) -> str:
    script = " ".join(shlex.quote(part) for part in command) + " 2>&1"
    options = ExecutionOptions(language="bash", timeout=30)
    result = await service.run(service.environment(None), script, options)
    found = VERSION.search(result.stdout)
    return found.group(0) if found else "0.0.0"


class _Catalogue:
    """The runtimes of one server, probed once: concurrent first requests wait for the one
    probe, which holds an execution slot like any run; the libraries of the datasets
    profile likewise."""

    def __init__(self) -> None:
        self.lock = anyio.Lock()
        self.runtimes: list[Runtime] | None = None
        self.libraries: dict[str, str | None] | None = None


_CATALOGUES: weakref.WeakKeyDictionary[Service, _Catalogue] = weakref.WeakKeyDictionary()


async def runtimes(service: Service) -> list[Runtime]:
    """The server environment's languages with the versions of their tools (asked once)."""
    catalogue = _CATALOGUES.setdefault(service, _Catalogue())
    async with catalogue.lock:
        if catalogue.runtimes is None:
            async with service.admission.slot():
                catalogue.runtimes = await _probe(service)
    return catalogue.runtimes


async def _probe(service: Service) -> list[Runtime]:
    """Each available language's runtime in Piston's names, its version asked of the tool
    that really runs it (an execution like any other, counted in the metrics)."""
    found = []
    for support in (await service.environment(None).status()).languages:
        if support.available and support.command:
            language = get_language(support.name)
            command = language.version_of or (support.command, *language.version)
            version = await _version(service, command)
            name, package, aliases = PISTON.get(language.name, (language.name, None, ()))
            found.append(
                Runtime(language=name, version=version, aliases=list(aliases), runtime=package)
            )
    return found


async def libraries(service: Service) -> dict[str, str | None]:
    """The datasets profile's libraries where the server runs code (asked once)."""
    catalogue = _CATALOGUES.setdefault(service, _Catalogue())
    async with catalogue.lock:
        if catalogue.libraries is None:
            async with service.admission.slot():
                script = probe_script("datasets")
                options = ExecutionOptions(language="bash", timeout=60)
                result = await service.run(service.environment(None), script, options)
                catalogue.libraries = parse_probe("datasets", result.stdout)
    return catalogue.libraries


def _matches(version: str, selector: str) -> bool:
    """Whether ``version`` satisfies a selector such as ``*``, ``3.x``, ``3.11`` or ``3.11.2``."""
    selector = selector.strip()
    if selector in ("*", "x", "X", ""):
        return True
    have = version.split(".")
    for i, want in enumerate(selector.lstrip("v=").split(".")):
        if want in ("x", "X", "*"):
            continue
        if i >= len(have) or have[i] != want:
            return False
    return True


@router.get("/api/v2/runtimes", response_model=list[Runtime], response_model_exclude_none=True)
async def list_runtimes(request: Request) -> list[Runtime]:
    """The languages and versions this server runs, in Piston's names."""
    return await runtimes(service_of(request))


class Package(BaseModel):
    language: str
    language_version: str
    installed: bool


@router.get("/api/v2/packages", response_model=list[Package])
async def list_packages(request: Request) -> list[Package]:
    """What is installed, in the shape of Piston's package list (installing and removing
    packages through the API is not offered: the machine's setup installs them)."""
    service = service_of(request)
    found = {(r.runtime or r.language, r.version) for r in await runtimes(service)}
    packages = [Package(language=n, language_version=v, installed=True) for n, v in sorted(found)]
    for name, version in (await libraries(service)).items():
        packages.append(
            Package(language=name, language_version=version or "", installed=version is not None)
        )
    return packages


def _stage(result: CompileResult | ExecutionResult, output: str | None = None) -> Stage:
    status: Any = None
    if result.timed_out:
        status = "TO"
    elif result.stdout_truncated:
        status = "OL"
    elif result.stderr_truncated:
        status = "EL"
    elif result.signal is not None:
        status = "SG"
    elif result.exit_code:
        status = "RE"
    signal = "SIGKILL" if status in ("TO", "OL", "EL") else result.signal
    return Stage(
        stdout=result.stdout,
        stderr=result.stderr,
        output=output if output is not None else result.stdout + result.stderr,
        code=result.exit_code,
        signal=signal,
        message=result.error,
        status=status,
        cpu_time=None if result.cpu_time is None else result.cpu_time * 1000,
        wall_time=result.execution_time * 1000,
        memory=result.memory_peak,
    )


def _options(
    body: ExecuteRequest, service: Service, language: str, **more: Any
) -> ExecutionOptions:
    """The options of a Piston request: the first file runs, the others are written beside
    it, under their own names."""
    main, *others = body.files
    memory = max(body.run_memory_limit, body.compile_memory_limit)
    cpu = body.run_cpu_time
    return ExecutionOptions(
        language=language,
        timeout=body.run_timeout / 1000 if body.run_timeout else service.default_timeout(3),
        compile_timeout=(
            body.compile_timeout / 1000 if body.compile_timeout else service.default_timeout(10)
        ),
        args=body.args,
        files={(f.name or f"file{i}.code"): f.data() for i, f in enumerate(others, 1)},
        filename=main.name or None,  # the program sees its own name, as Piston keeps it
        limits=Limits(memory=memory if memory > 0 else None, cpu_time=cpu / 1000 if cpu else None),
        **more,
    )


async def _runtime(service: Service, body: ExecuteRequest) -> tuple[str, Runtime]:
    """Our language and Piston's runtime for a request.

    :raises InvalidOptionsError: in Piston's words, for a language or version not served.
    """
    unknown = InvalidOptionsError(f"{body.language}-{body.version} runtime is unknown")
    try:
        language = get_language(piston_language(body.language))
    except InvalidOptionsError:
        raise unknown from None  # Piston's own words
    name = PISTON.get(language.name, (language.name,))[0]
    runtime = next((r for r in await runtimes(service) if r.language == name), None)
    if runtime is None or not _matches(runtime.version, body.version):
        raise unknown
    return language.name, runtime


def _code(body: ExecuteRequest) -> str:
    code = body.files[0].data()
    return code if isinstance(code, str) else code.decode("utf-8", "replace")


@router.post("/api/v2/execute", response_model=ExecuteResponse, dependencies=[Depends(json_body)])
async def execute(body: ExecuteRequest, request: Request) -> ExecuteResponse:
    """Run the first file (the others are written beside it)."""
    service = service_of(request)
    language, runtime = await _runtime(service, body)
    interleaved: list[str] = []
    options = _options(
        body,
        service,
        language,
        stdin=body.stdin,
        on_stdout=interleaved.append,
        on_stderr=interleaved.append,
    )
    result = await service.execute(_code(body), options)
    compiled = _stage(result.compile) if result.compile is not None else None
    if compiled is not None and result.compile is not None and not result.compile.success:
        run = compiled  # Piston v2 answers a failed compilation in ``run`` too
    else:
        run = _stage(result, "".join(interleaved))
    return ExecuteResponse(language=runtime.language, version=runtime.version, run=run,
                           compile=compiled)  # fmt: skip


# -- the interactive WebSocket ------------------------------------------------------------

live = APIRouter(tags=["Piston"])
"""``/api/v2/connect``: a WebSocket, which checks the API token itself."""

INIT_WITHIN = 1.0
"""Seconds a new connection has to send its ``init`` message, as Piston allows."""

SEND_WITHIN = 10.0
"""Seconds a client has to take each message; one that stops reading ends its job (its
program waits on its output meanwhile, and its slot is not held longer)."""

# Piston's close codes
ALREADY_INITIALIZED, INIT_TIMEOUT, NOTIFIED_ERROR, NOT_INITIALIZED = 4000, 4001, 4002, 4003
ONLY_STDIN, INVALID_SIGNAL, JOB_COMPLETED = 4004, 4005, 4999


class _Closed(Exception):
    """The connection was closed with a code (or by the client)."""


class _Connection:
    """One interactive job: sends are serialised; closing ends the job."""

    def __init__(self, websocket: WebSocket) -> None:
        self.websocket = websocket
        self.lock = anyio.Lock()
        self.closed = False

    async def send(self, message: dict[str, Any]) -> None:
        async with self.lock:
            if self.closed:
                raise _Closed
            try:
                with anyio.fail_after(SEND_WITHIN):
                    await self.websocket.send_text(json.dumps(message))
            except (WebSocketDisconnect, RuntimeError, OSError, TimeoutError):
                self.closed = True
                raise _Closed from None

    async def close(self, code: int, reason: str) -> None:
        async with self.lock:
            if not self.closed:
                self.closed = True
                with contextlib.suppress(WebSocketDisconnect, RuntimeError, OSError):
                    await self.websocket.close(code, reason)

    async def fail(self, message: str) -> None:
        """Piston's way: the error as a message, then close 4002 (a close reason is short)."""
        with contextlib.suppress(_Closed):
            await self.send({"type": "error", "message": message})
        await self.close(NOTIFIED_ERROR, "Notified Error")


def _exit(stage: str, result: CompileResult | ExecutionResult) -> dict[str, Any]:
    piston = _stage(result)
    return {"type": "exit", "stage": stage, "code": piston.code, "signal": piston.signal}


async def _job(
    connection: _Connection, service: Service, body: ExecuteRequest, stdin: LiveInput
) -> None:
    """Run one job, telling the client each stage, its output and its end."""
    language, runtime = await _runtime(service, body)

    async def data(stream: str, text: str) -> None:
        await connection.send({"type": "data", "stream": stream, "data": text})

    async def compiled(result: CompileResult) -> None:
        for stream in ("stdout", "stderr"):
            if getattr(result, stream):
                await data(stream, getattr(result, stream))
        await connection.send(_exit("compile", result))
        if result.success:
            await connection.send({"type": "stage", "stage": "run"})

    options = _options(
        body,
        service,
        language,
        stdin=stdin,
        max_output_bytes=service.settings.max_output_bytes,  # streamed: the server's ceiling
        on_stdout=functools.partial(data, "stdout"),
        on_stderr=functools.partial(data, "stderr"),
        on_compile=compiled,
    )
    if body.stdin:
        await stdin.write(body.stdin)
    await connection.send(
        {"type": "runtime", "language": runtime.language, "version": runtime.version}
    )
    first = "compile" if get_language(language).compiled else "run"
    await connection.send({"type": "stage", "stage": first})
    result = await service.execute(_code(body), options)
    if result.compile is None or result.compile.success:
        await connection.send(_exit("run", result))


@live.websocket("/api/v2/connect")
async def connect(websocket: WebSocket) -> None:
    """Piston's interactive execution: ``init`` (an execute request) within a second, then
    ``data`` (stdin) and ``signal`` messages while the job runs; the server sends
    ``runtime``, ``stage``, ``data`` (stdout, stderr) and ``exit`` messages, and closes with
    4999 once the job is over (4000-4005 for the client's mistakes, as Piston does)."""
    check_token: Callable[[Mapping[bytes, bytes]], bool] = websocket.app.state.check_token
    if not check_token(dict(websocket.scope["headers"])):
        await websocket.close(1008, "a valid API token is required")
        return
    await websocket.accept()
    connection = _Connection(websocket)
    service: Service = websocket.app.state.service
    stdin = LiveInput()
    async with anyio.create_task_group() as tg:

        async def job(body: ExecuteRequest) -> None:
            try:
                await _job(connection, service, body, stdin)
            except _Closed:
                pass
            except (RunEnvironmentError, ValidationError) as exc:
                await connection.fail(str(exc))
            else:
                await connection.close(JOB_COMPLETED, "Job Completed")
            tg.cancel_scope.cancel()

        started = False
        with anyio.move_on_after(INIT_WITHIN) as waiting:
            while not started:
                started = await _message(connection, stdin, job, tg, started)
                if connection.closed:
                    return
        if waiting.cancelled_caught:
            await connection.close(INIT_TIMEOUT, "Initialization Timeout")
            return
        while not connection.closed:
            await _message(connection, stdin, job, tg, started)
        tg.cancel_scope.cancel()


async def _message(
    connection: _Connection,
    stdin: LiveInput,
    job: Callable[[ExecuteRequest], Coroutine[Any, Any, None]],
    tg: anyio.abc.TaskGroup,
    started: bool,
) -> bool:
    """Take one message from the client; whether the job has started."""
    try:
        text = await connection.websocket.receive_text()
    except (WebSocketDisconnect, RuntimeError, KeyError):
        connection.closed = True  # the client went away: the job ends with the connection
        tg.cancel_scope.cancel()
        return started
    try:
        message = json.loads(text)
        kind = message.get("type") if isinstance(message, dict) else None
    except ValueError as exc:
        await connection.fail(str(exc))
        return started
    if kind == "init":
        if started:
            await connection.close(ALREADY_INITIALIZED, "Already Initialized")
            return started
        try:
            body = ExecuteRequest.model_validate(message)
        except ValidationError as exc:
            await connection.fail(_said(exc))
            return started
        tg.start_soon(job, body)
        return True
    if kind not in ("data", "signal"):
        return started  # Piston ignores other messages
    if not started:
        await connection.close(NOT_INITIALIZED, "Not yet initialized")
    elif kind == "data":
        if message.get("stream") != "stdin" or not isinstance(message.get("data"), str):
            await connection.close(ONLY_STDIN, "Can only write to stdin")
        elif not stdin.closed:
            await stdin.write(message["data"])
    else:
        name = message.get("signal")
        if not isinstance(name, str) or name not in signal.Signals.__members__:
            await connection.close(INVALID_SIGNAL, "Invalid signal")
        else:
            stdin.signal(name)
    return started


def _said(exc: ValidationError) -> str:
    first = exc.errors()[0]
    where = ".".join(str(part) for part in first["loc"])
    return f"{where}: {first['msg']}" if where else str(first["msg"])
