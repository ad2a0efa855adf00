"""``runenv serve``: the HTTP service, on a port that is ours before we say so."""

from __future__ import annotations

import math
import resource
import socket
from typing import Any

import anyio
import click
from rich.markup import escape

from .._errors import RunEnvironmentError
from .common import CANNOT_RUN, Failure, err, failure

LOG_LEVELS = ("critical", "error", "warning", "info", "debug")


@click.command(context_settings={"show_default": True})
@click.option("--host", help="Address to bind.  [default: 127.0.0.1]")
@click.option("--port", type=int, help="Port to bind.  [default: 8000]")
@click.option("-E", "--environment", help="Default environment.  [default: sandbox]")
@click.option(
    "--allow-local", is_flag=True, default=None, help="Also offer the unisolated local environment."
)
@click.option(
    "--token", envvar="RUNENV_TOKEN", help="API token required of clients ($RUNENV_TOKEN)."
)
@click.option(
    "--max-concurrency", type=click.IntRange(min=1), help="Executions at once.  [default: 8]"
)
@click.option("--max-queue", type=click.IntRange(min=0), help="Executions waiting.  [default: 256]")
@click.option(
    "--max-body-bytes", type=click.IntRange(min=1), help="Largest request body.  [default: 16 MiB]"
)
@click.option(
    "--max-timeout",
    type=click.FloatRange(min=0, min_open=True),
    help="Longest timeout a request may ask for, in seconds.  [default: 300]",
)
@click.option("--max-memory", type=click.IntRange(min=1), help="Most limits.memory, bytes.")
@click.option("--max-disk", type=click.IntRange(min=1), help="Most limits.disk, bytes.")
@click.option("--max-processes", type=click.IntRange(min=1), help="Most limits.processes.")
@click.option("--max-open-files", type=click.IntRange(min=1), help="Most limits.open_files.")
@click.option(
    "--max-cpu-time", type=click.FloatRange(min=0, min_open=True), help="Most limits.cpu_time, s."
)
@click.option(
    "--grace",
    type=click.FloatRange(min=0),
    help="Seconds in-flight runs get on SIGTERM.  [default: 10]",
)
@click.option(
    "--log-level", type=click.Choice(LOG_LEVELS), default="info", help="What the log says."
)
@click.option("--no-access-log", is_flag=True, help="Do not log each request.")
def serve(log_level: str, no_access_log: bool, **flags: Any) -> None:
    """Serve code execution over HTTP: the native API (/v1), SandboxFusion's /run_code,
    Piston's /api/v2 and E2B's envd API (so the e2b SDK, with debug=True, runs against it).
    Every option can also be set as RUNENV_<OPTION> (e.g. RUNENV_MAX_QUEUE).
    """
    try:
        from ..server import GracefulServer, ServerSettings, create_app, server_config
    except ImportError as exc:
        raise Failure(
            f"serving needs {exc.name}: pip install 'run-environments[server]'", CANNOT_RUN
        ) from exc
    try:
        settings = ServerSettings.from_env(**flags)
        app = create_app(settings)
    except RunEnvironmentError as exc:
        raise failure(exc) from None
    service = app.state.service
    status = anyio.run(service.environment(None).status)
    if not status.ready:
        raise Failure(
            f"the {settings.environment} environment is not ready: {status.reason}", CANNOT_RUN
        )
    listening = _listen(settings.host, settings.port)
    err.print(f"runenv: serving the {settings.environment} environment on "
              f"http://{escape(settings.host)}:{settings.port}")  # fmt: skip
    if settings.token is None and not settings.loopback:
        err.print(
            f"[bold red]runenv: WARNING: serving on {escape(settings.host)}, beyond this "
            "machine, with no API token: anyone who reaches the port can run code (set "
            "--token or RUNENV_TOKEN)[/bold red]"
        )
    _raise_descriptor_limit()
    config = server_config(
        app,
        settings,
        timeout_graceful_shutdown=math.ceil(settings.grace),
        log_level=log_level,
        access_log=not no_access_log,
    )
    GracefulServer(config, service, settings.grace).run(sockets=[listening])


def _listen(host: str, port: int) -> socket.socket:
    """A socket bound to ``host:port`` and listening, or one line saying why not."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise Failure(f"cannot listen on {host}: {exc.strerror}", CANNOT_RUN) from None
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(2048)
    except OSError as exc:
        sock.close()
        raise Failure(f"cannot listen on {host}:{port}: {exc.strerror}", CANNOT_RUN) from None
    return sock


def _raise_descriptor_limit() -> None:
    """Let the server hold as many connections as the hard limit allows (it bounds them)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
