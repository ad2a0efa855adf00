"""E2B's in-sandbox daemon (envd), as its SDK calls it: the ``process.Process`` and
``filesystem.Filesystem`` Connect services and the ``/files`` and ``/health`` routes.

The generated messages and server stubs come from the ``e2b`` package; the work is done by an
:class:`~.envd_session.Session` over the sandbox environment. Point the SDK at the server with
``debug=True`` (it then connects to localhost:49983) or ``sandbox_url=``.
"""

from __future__ import annotations

import os
import signal
import stat
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import anyio
from connectrpc.code import Code
from connectrpc.codec import Codec, proto_binary_codec, proto_json_codec
from connectrpc.errors import ConnectError
from e2b.envd.filesystem import filesystem_pb as fs
from e2b.envd.filesystem.filesystem_connect import FilesystemASGIApplication
from e2b.envd.process import process_pb as pb
from e2b.envd.process.process_connect import ProcessASGIApplication
from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse, StreamingResponse
from protobuf import Oneof
from protobuf.wkt import Timestamp
from starlette.datastructures import UploadFile
from starlette.types import ASGIApp, Receive, Scope, Send

from .._errors import EnvironmentUnavailableError, RunEnvironmentError, SpawnError
from .._workspace import off_loop
from .admission import Overloaded
from .envd_process import Event
from .envd_session import READ_CHUNK, PathError, Session, Sessions

router = APIRouter(tags=["E2B envd"])


def _error(exc: Exception) -> ConnectError:
    if isinstance(exc, PathError):
        return ConnectError(Code.NOT_FOUND if exc.missing else Code.INVALID_ARGUMENT, str(exc))
    if isinstance(exc, Overloaded):
        return ConnectError(Code.RESOURCE_EXHAUSTED, "too many commands are running; retry later")
    if isinstance(exc, EnvironmentUnavailableError | SpawnError):
        return ConnectError(Code.UNAVAILABLE, str(exc))
    return ConnectError(Code.INVALID_ARGUMENT, str(exc))


FAILURES = (RunEnvironmentError, Overloaded)
"""What a service call turns into a Connect error (anything else is a bug: ``unknown``)."""


def identity(headers: Any) -> str:
    """The session key of a request: the token it offers and the sandbox id it names."""
    get = headers.get
    authorization = get("authorization") or ""
    token = authorization[7:] if authorization.lower().startswith("bearer ") else ""
    token = token or get("x-access-token") or get("x-api-key") or ""
    return Sessions.identity(token, get("e2b-sandbox-id") or "")


def _event(event: Event, pid: int) -> pb.ProcessEvent:
    # The generated types want literal field names; these are the oneofs' own.
    if event.kind == "start":
        start = pb.ProcessEvent.StartEvent(pid=pid)
        return pb.ProcessEvent(event=Oneof("start", start))  # type: ignore[arg-type]
    if event.kind in ("stdout", "stderr"):
        output: Any = Oneof(event.kind, event.data)
        data = pb.ProcessEvent.DataEvent(output=output)
        return pb.ProcessEvent(event=Oneof("data", data))  # type: ignore[arg-type]
    end = pb.ProcessEvent.EndEvent(
        exit_code=event.exit_code, exited=True, status=event.status, error=event.error
    )
    return pb.ProcessEvent(event=Oneof("end", end))  # type: ignore[arg-type]


def _pid(selector: Any) -> int:
    match selector.selector if selector is not None else None:
        case Oneof(field="pid", value=pid):
            return int(pid)
    raise ConnectError(Code.INVALID_ARGUMENT, "select the process by pid")


def _signal(value: Any) -> int:
    name = getattr(value, "name", str(value))
    return signal.SIGKILL if "KILL" in name else signal.SIGTERM


def _unimplemented(what: str) -> ConnectError:
    return ConnectError(Code.UNIMPLEMENTED, f"{what} is not offered by this server")


class ProcessService:
    """``process.Process``: start, attach to, list, feed and signal commands (no PTY)."""

    def __init__(self, sessions: Sessions) -> None:
        self.sessions = sessions

    async def _session(self, ctx: Any) -> Session:
        try:
            return await self.sessions.get(identity(ctx.request_headers))
        except FAILURES as exc:
            raise _error(exc) from None

    async def update(self, request: Any, ctx: Any) -> Any:
        raise _unimplemented("resizing a PTY")

    async def stream_input(self, request: Any, ctx: Any) -> Any:
        raise _unimplemented("streamed input (use SendInput)")

    async def start(self, request: pb.StartRequest, ctx: Any) -> AsyncIterator[pb.StartResponse]:
        config = request.process or pb.ProcessConfig()
        if not config.cmd:
            raise ConnectError(Code.INVALID_ARGUMENT, "process.cmd is required")
        if any("\0" in part for part in (config.cmd, *config.args)):
            raise ConnectError(Code.INVALID_ARGUMENT, "process.cmd and args may not contain NUL")
        session = await self._session(ctx)
        try:
            process, follower, stack = await session.spawn(
                [config.cmd, *config.args],
                dict(config.envs),
                config.cwd if config.has_field("cwd") else None,
                request.tag if request.has_field("tag") else None,
            )
        except FAILURES as exc:
            raise _error(exc) from None
        async with stack:
            if not request.stdin:
                process.handle.close_stdin()
            async for event in follower.events():
                yield pb.StartResponse(event=_event(event, process.pid))

    async def connect(
        self, request: pb.ConnectRequest, ctx: Any
    ) -> AsyncIterator[pb.ConnectResponse]:
        session = await self._session(ctx)
        try:
            process = session.process(_pid(request.process))
        except PathError as exc:
            raise _error(exc) from exc
        with process.follow() as follower:
            yield pb.ConnectResponse(event=_event(Event("start"), process.pid))
            async for event in follower.events():
                yield pb.ConnectResponse(event=_event(event, process.pid))

    async def list(self, request: pb.ListRequest, ctx: Any) -> pb.ListResponse:
        session = await self._session(ctx)
        return pb.ListResponse(
            processes=[
                pb.ProcessInfo(
                    config=pb.ProcessConfig(cmd=p.argv[0], args=p.argv[1:], envs=p.envs, cwd=p.cwd),
                    pid=p.pid,
                    tag=p.tag,
                )
                for p in session.running()
            ]
        )

    async def send_input(self, request: pb.SendInputRequest, ctx: Any) -> pb.SendInputResponse:
        session = await self._session(ctx)
        try:
            process = session.process(_pid(request.process))
            match request.input.input if request.input is not None else None:
                case Oneof(field="stdin", value=data):
                    await process.handle.write(data)
                case _:
                    raise ConnectError(Code.UNIMPLEMENTED, "only stdin input is supported")
        except (PathError, OSError, ValueError, anyio.ClosedResourceError) as exc:
            raise ConnectError(Code.FAILED_PRECONDITION, str(exc)) from exc
        return pb.SendInputResponse()

    async def close_stdin(self, request: pb.CloseStdinRequest, ctx: Any) -> pb.CloseStdinResponse:
        session = await self._session(ctx)
        try:
            session.process(_pid(request.process)).handle.close_stdin()
        except PathError as exc:
            raise _error(exc) from exc
        return pb.CloseStdinResponse()

    async def send_signal(self, request: pb.SendSignalRequest, ctx: Any) -> pb.SendSignalResponse:
        session = await self._session(ctx)
        try:
            session.process(_pid(request.process)).handle.signal(_signal(request.signal))
        except PathError as exc:
            raise _error(exc) from exc
        return pb.SendSignalResponse()


def _entry(path: str, info: Any, target: str | None) -> fs.EntryInfo:
    kind = fs.FileType.DIRECTORY if stat.S_ISDIR(info.st_mode) else fs.FileType.FILE
    if target is not None:
        kind = fs.FileType.SYMLINK
    modified = datetime.fromtimestamp(info.st_mtime, UTC)
    return fs.EntryInfo(
        name=path.rsplit("/", 1)[-1],
        type=kind,
        path=path,
        size=info.st_size,
        mode=stat.S_IMODE(info.st_mode),
        permissions=stat.filemode(info.st_mode),
        owner="user",
        group="user",
        modified_time=Timestamp.from_datetime(modified),
        symlink_target=target,
        is_symlink=target is not None,
    )


class FilesystemService:
    """``filesystem.Filesystem``: stat, list, make, move and remove paths (no watching)."""

    def __init__(self, sessions: Sessions) -> None:
        self.sessions = sessions

    async def watch_dir(self, request: Any, ctx: Any) -> AsyncIterator[Any]:
        raise _unimplemented("watching directories")
        yield  # pragma: no cover  (a server stream)

    async def create_watcher(self, request: Any, ctx: Any) -> Any:
        raise _unimplemented("watching directories")

    async def get_watcher_events(self, request: Any, ctx: Any) -> Any:
        raise _unimplemented("watching directories")

    async def remove_watcher(self, request: Any, ctx: Any) -> Any:
        raise _unimplemented("watching directories")

    async def _call(self, ctx: Any, operation: str, *args: Any) -> Any:
        """``operation`` of the client's session, its failures as Connect errors."""
        try:
            session = await self.sessions.get(identity(ctx.request_headers))
            return await getattr(session, operation)(*args)
        except FAILURES as exc:
            raise _error(exc) from None

    async def _entry(self, ctx: Any, path: str) -> fs.EntryInfo:
        return _entry(*await self._call(ctx, "stat", path))

    async def stat(self, request: fs.StatRequest, ctx: Any) -> fs.StatResponse:
        return fs.StatResponse(entry=await self._entry(ctx, request.path))

    async def list_dir(self, request: fs.ListDirRequest, ctx: Any) -> fs.ListDirResponse:
        names = await self._call(ctx, "list_dir", request.path)
        base = (await self._entry(ctx, request.path)).path
        return fs.ListDirResponse(entries=[await self._entry(ctx, f"{base}/{n}") for n in names])

    async def make_dir(self, request: fs.MakeDirRequest, ctx: Any) -> fs.MakeDirResponse:
        if not await self._call(ctx, "make_dir", request.path):
            raise ConnectError(Code.ALREADY_EXISTS, f"{request.path} already exists")
        return fs.MakeDirResponse(entry=await self._entry(ctx, request.path))

    async def move(self, request: fs.MoveRequest, ctx: Any) -> fs.MoveResponse:
        await self._call(ctx, "move", request.source, request.destination)
        return fs.MoveResponse(entry=await self._entry(ctx, request.destination))

    async def remove(self, request: fs.RemoveRequest, ctx: Any) -> fs.RemoveResponse:
        await self._call(ctx, "remove", request.path)
        return fs.RemoveResponse()


async def session_of(request: Request) -> Session:
    """The session of the client making ``request``."""
    sessions: Sessions = request.app.state.envd
    return await sessions.get(identity(request.headers))


def _file_error(exc: Exception) -> JSONResponse:
    if isinstance(exc, PathError):
        status = 404 if exc.missing else 400
    elif isinstance(exc, Overloaded | EnvironmentUnavailableError):
        status = 503
    else:
        status = 400
    return JSONResponse({"code": status, "message": str(exc)}, status)


@router.get("/health", status_code=204)
async def health() -> Response:
    """envd's health check."""
    return Response(status_code=204)


@router.get("/files")
async def download(request: Request, path: str) -> Response:
    """Read a file of the session, streamed (never whole in memory)."""
    try:
        session = await session_of(request)
        fd, size = await off_loop(session.open_file, path)
    except FAILURES as exc:
        return _file_error(exc)

    async def chunks() -> AsyncIterator[bytes]:
        with os.fdopen(fd, "rb", buffering=0) as fh:
            while chunk := await anyio.to_thread.run_sync(fh.read, READ_CHUNK):
                yield chunk

    headers = {"content-length": str(size)}
    return StreamingResponse(chunks(), media_type="application/octet-stream", headers=headers)


@router.post("/files")
async def upload(request: Request, path: str | None = None) -> Response:
    """Write files: an ``application/octet-stream`` body to ``path``, or the parts of a
    ``multipart/form-data`` body, each to its file name (or to ``path`` when only one)."""
    written = []
    try:
        session = await session_of(request)
        if request.headers.get("content-type", "").startswith("multipart/form-data"):
            async with request.form() as form:
                parts = [part for _, part in form.multi_items() if isinstance(part, UploadFile)]
                for part in parts:
                    target = path if path and len(parts) == 1 else part.filename or path
                    if not target:
                        return JSONResponse({"code": 400, "message": "no path"}, 400)
                    written.append(await session.write(target, await part.read()))
        else:
            if not path:
                return JSONResponse({"code": 400, "message": "the path is required"}, 400)
            written.append(await session.write(path, await request.body()))
    except FAILURES as exc:
        return _file_error(exc)
    return JSONResponse(
        [{"name": p.rsplit("/", 1)[-1], "type": "file", "path": p} for p in written]
    )


class _StrictCodec:
    """One of connectrpc's codecs, whose decoding failures (malformed JSON, lone surrogates,
    invalid UTF-8 in a protobuf string) are the client's: ``invalid_argument``, not ``unknown``."""

    def __init__(self, codec: Codec[Any, Any]) -> None:
        self.codec = codec

    def name(self) -> str:
        return str(self.codec.name())

    def encode(self, message: Any) -> bytes:
        return bytes(self.codec.encode(message))

    def decode(self, data: bytes | bytearray, message_class: type[Any]) -> Any:
        try:
            return self.codec.decode(data, message_class)
        except ConnectError:
            raise
        except Exception as exc:  # whatever the codec's parser raises for malformed input
            raise ConnectError(
                Code.INVALID_ARGUMENT, f"the request is not a valid {self.name()} message: {exc}"
            ) from None


CODECS = [_StrictCodec(proto_binary_codec()), _StrictCodec(proto_json_codec())]


class EnvdDispatch:
    """Sends the Connect services' paths to their applications and the rest on."""

    PREFIXES = ("/process.Process/", "/filesystem.Filesystem/")

    def __init__(self, app: ASGIApp, sessions: Sessions, check_token: Any) -> None:
        self.app = app
        self.check_token = check_token
        process = ProcessASGIApplication(ProcessService(sessions), codecs=CODECS)  # type: ignore[arg-type]
        files = FilesystemASGIApplication(FilesystemService(sessions), codecs=CODECS)  # type: ignore[arg-type]
        self._apps: dict[str, ASGIApp] = {
            "/process.Process/": process,
            "/filesystem.Filesystem/": files,
        }

    def _connect_app(self, prefix: str) -> ASGIApp:
        return self._apps[prefix]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "") if scope["type"] == "http" else ""
        prefix = next((p for p in self.PREFIXES if path.startswith(p)), None)
        if prefix is None:
            await self.app(scope, receive, send)
            return
        if not self.check_token(dict(scope["headers"])):
            await JSONResponse({"code": 401, "message": "a valid token is required"}, 401)(
                scope, receive, send
            )
            return
        await self._connect_app(prefix)(scope, receive, send)
