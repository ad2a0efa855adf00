"""``runenv``: run code from the command line in any run environment."""

from __future__ import annotations

import math
import resource
import signal as signals
import sys
from typing import Any

import anyio
import click
from rich.console import Console
from rich.table import Table

from ._errors import RunEnvironmentError
from ._languages import LANGUAGES, get_language, language_for_path
from ._models import ExecutionResult
from ._registry import create_environment, environment_names
from .environments.base import EnvironmentStatus, RunEnvironment

TIMEOUT_STATUS = 124
DEFAULT_ENVIRONMENT = "sandbox"
"""Where code runs when no ``--env`` is given: isolated, or not at all."""

err = Console(stderr=True, highlight=False)


def exit_status(result: ExecutionResult) -> int:
    """The shell exit status for a result: the program's, 124 on timeout, 128+N on a signal."""
    if result.timed_out:
        return TIMEOUT_STATUS
    if result.compile is not None and not result.compile.success:
        return result.compile.exit_code or 1
    if result.signal is not None:
        return 128 + signals.Signals[result.signal].value
    return result.exit_code if result.exit_code is not None else 1


async def _choose(name: str | None) -> RunEnvironment:
    """The environment asked for, or the sandbox; never, silently, an unisolated one."""
    if name is not None:
        return create_environment(name)
    env = create_environment(DEFAULT_ENVIRONMENT)
    status = await env.status()
    if not status.ready:
        raise click.ClickException(
            f"the sandbox is not ready here: {status.reason}. It isolates code you did not "
            "write; to run it unisolated with your own permissions instead, ask for that "
            "with -e local ('runenv doctor' says more)"
        )
    return env


def _write(stream: Any) -> Any:
    def write(text: str) -> None:
        stream.write(text)
        stream.flush()

    return write


async def _run(code: str, env_name: str | None, as_json: bool, **options: Any) -> ExecutionResult:
    env = await _choose(env_name)
    if not as_json:
        options.update(on_stdout=_write(sys.stdout), on_stderr=_write(sys.stderr))
    async with env:
        return await env.execute(code, **options)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="run-environments")
def main() -> None:
    """Run code snippets in interchangeable run environments."""


@main.command(context_settings={"ignore_unknown_options": True})
@click.argument("file", required=False, type=click.Path(dir_okay=False, allow_dash=True))
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
@click.option("-l", "--language", help="Language name or alias (default: from FILE's suffix).")
@click.option("-c", "--code", help="The code to run, instead of FILE.")
@click.option("-e", "--env", "env_name", help="Environment to run in (default: the sandbox).")
@click.option(
    "-t",
    "--timeout",
    type=click.FloatRange(min=0, min_open=True),
    default=30.0,
    show_default=True,
    help="Wall-clock limit in seconds.",
)
@click.option("--stdin", "stdin_text", help="Text for the program's standard input.")
@click.option("--stdin-file", type=click.File("rb"), help="File for standard input ('-': ours).")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@click.option("-v", "--verbose", is_flag=True, help="Say which environment ran, and how long.")
def run(
    file: str | None,
    args: tuple[str, ...],
    language: str | None,
    code: str | None,
    env_name: str | None,
    timeout: float,
    stdin_text: str | None,
    stdin_file: Any,
    as_json: bool,
    verbose: bool,
) -> None:
    """Run FILE (or --code) and exit with the program's status (124 on timeout).

    Program arguments follow FILE, or `--` when --code is used. Without --env the code runs
    in the sandbox when it is ready here, else locally.
    """
    if code is not None and file is not None:
        args = (file, *args)  # with --code, everything positional is an argument
        file = None
    if file is None and code is None:
        raise click.UsageError("give either FILE or --code")
    try:
        if code is None:
            assert file is not None
            with click.open_file(file, "r") as fh:
                code = fh.read()
            language = language or language_for_path(file).name
        lang = get_language(language or "python")
        stdin = stdin_file.read() if stdin_file is not None else stdin_text
        result = anyio.run(
            lambda: _run(
                code,
                env_name,
                as_json,
                language=lang.name,
                timeout=timeout,
                stdin=stdin,
                args=list(args),
            )
        )
    except RunEnvironmentError as exc:
        raise click.ClickException(str(exc)) from exc
    if as_json:
        click.echo(result.to_json(indent=2))
    else:
        if result.compile is not None and not result.compile.success:
            sys.stderr.write(result.compile.stdout + result.compile.stderr)
        if not result.success:
            err.print(f"[dim]runenv ({result.environment}): {result.error}[/dim]")
        elif verbose or sys.stderr.isatty():
            took = f"{result.execution_time * 1000:.0f} ms"
            err.print(f"[dim]runenv: ran in the {result.environment} environment ({took})[/dim]")
    sys.exit(exit_status(result))


async def _statuses() -> list[tuple[str, EnvironmentStatus | str]]:
    found: list[tuple[str, EnvironmentStatus | str]] = []
    for name in environment_names():
        try:
            env = create_environment(name)
            async with env:
                found.append((name, await env.status()))
        except RunEnvironmentError as exc:
            found.append((name, str(exc)))
    return found


@main.command()
def languages() -> None:
    """List each language and whether each environment can run it."""
    statuses = anyio.run(_statuses)
    table = Table(title="Languages")
    table.add_column("language")
    table.add_column("aliases")
    named = [(n, s) for n, s in statuses if isinstance(s, EnvironmentStatus) and s.languages]
    for name, _ in named:
        table.add_column(name)
    support = {(n, lang.name): lang.available for n, st in named for lang in st.languages}
    for language in LANGUAGES:
        marks = [
            "[green]yes[/green]" if support.get((name, language.name)) else "[red]no[/red]"
            for name, _ in named
        ]
        table.add_row(language.name, ", ".join(language.aliases), *marks)
    unavailable = [n for n, s in statuses if not (isinstance(s, EnvironmentStatus) and s.languages)]
    if unavailable:
        table.caption = f"not ready here: {', '.join(unavailable)} (see runenv doctor)"
    Console().print(table)


@main.command()
def doctor() -> None:
    """Say which environments are ready, and what to install for the others."""
    console = Console(highlight=False)
    any_ready = False
    for name, status in anyio.run(_statuses):
        if isinstance(status, str):
            console.print(f"[red]✗[/red] {name}: {status}")
            continue
        any_ready |= status.ready
        mark = "[green]✓[/green]" if status.ready else "[red]✗[/red]"
        console.print(f"{mark} {name}" + ("" if status.ready else f": {status.reason}"))
        for note in status.notes:
            console.print(f"    {note}")
        for lang in status.languages:
            if not lang.available:
                console.print(f"    {lang.name}: {lang.missing}")
    sys.exit(0 if any_ready else 1)


@main.command()
@click.option("--host", help="Address to bind.  [default: 127.0.0.1]")
@click.option("--port", type=int, help="Port to bind.  [default: 8000]")
@click.option("-e", "--env", "environment", help="Default environment.  [default: sandbox]")
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
@click.option("--max-body-bytes", type=click.IntRange(min=1), help="Largest request body.")
@click.option(
    "--max-timeout",
    type=click.FloatRange(min=0, min_open=True),
    help="Longest timeout a request may ask for, in seconds.",
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
def serve(**flags: Any) -> None:
    """Serve code execution over HTTP: the native API, SandboxFusion's /run_code and Piston's
    /api/v2. Every option can also be set as RUNENV_<OPTION> (e.g. RUNENV_MAX_QUEUE)."""
    try:
        import uvicorn

        from .server import ServerSettings, create_app, server_config
    except ImportError as exc:
        raise click.ClickException(
            f"serving needs {exc.name}: pip install 'run-environments[server]'"
        ) from exc
    try:
        settings = ServerSettings.from_env(**flags)
        app = create_app(settings)
    except RunEnvironmentError as exc:
        raise click.ClickException(str(exc)) from exc
    service = app.state.service
    status = anyio.run(service.environment(None).status)
    if not status.ready:
        raise click.ClickException(
            f"the {settings.environment} environment is not ready: {status.reason}"
        )
    err.print(f"runenv: serving the {settings.environment} environment on "
              f"http://{settings.host}:{settings.port}")  # fmt: skip
    if settings.token is None and not settings.loopback:
        err.print(
            f"[bold red]runenv: WARNING: serving on {settings.host}, beyond this machine, with no "
            "API token: anyone who reaches the port can run code (set --token or RUNENV_TOKEN)"
            "[/bold red]"
        )
    _raise_descriptor_limit()
    config = server_config(
        app, settings, timeout_graceful_shutdown=math.ceil(settings.grace), log_level="warning"
    )
    uvicorn.Server(config).run()


def _raise_descriptor_limit() -> None:
    """Let the server hold as many connections as the hard limit allows (it bounds them)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
