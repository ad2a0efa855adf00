"""``runenv run``: one program, in one environment, as ``python`` or ``docker run`` would."""

from __future__ import annotations

import inspect
import signal as signals
import sys
from typing import Any

import anyio
import click
from rich.markup import escape

from .._detect import language_for_path
from .._errors import RunEnvironmentError
from .._languages import get_language
from .._models import ExecutionResult, RawOutput
from .._registry import environment_names, get_environment_class
from ..environments.base import RunEnvironment
from .common import CANNOT_RUN, TIMEOUT, Failure, err, failure, run_until_signalled
from .common import want_json_errors as _want_json_errors
from .sources import (
    Size,
    Sources,
    program_file,
    program_text,
    read_file,
    split_add,
    standard_input,
    variables,
)

DEFAULT_ENVIRONMENT = "sandbox"
"""Where code runs when no ``--environment`` is given: isolated, or not at all."""


def exit_status(result: ExecutionResult) -> int:
    """The shell exit status for a result: the program's, 124 on timeout, 128+N on a signal."""
    if result.timed_out:
        return TIMEOUT
    if result.compile is not None and not result.compile.success:
        return result.compile.exit_code or 1
    if result.signal is not None:
        return 128 + signals.Signals[result.signal].value
    return result.exit_code if result.exit_code is not None else 1


class RunCommand(click.Command):
    """Keeps the raw arguments, to tell ``runenv run FILE -c CODE`` (an error) from
    ``runenv run -c CODE ARG`` (an argument)."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        ctx.meta["runenv.raw"] = list(args)
        return super().parse_args(ctx, args)


def _file_came_first(raw: list[str], file: str) -> bool:
    for token in raw:
        if token == "--":
            return False
        if token == "-c" or token.startswith(("--code", "-c")):
            return False
        if token == file:
            return True
    return False


@click.command(cls=RunCommand, context_settings={"show_default": True})
@click.argument("file", required=False, type=click.Path(dir_okay=False, allow_dash=False))
@click.argument("args", nargs=-1)
@click.option("-c", "--code", help="The program's text, instead of FILE.")
@click.option(
    "-l", "--language", help="Language name or alias.  [default: from FILE's suffix or #! line]"
)
@click.option(
    "-E",
    "--environment",
    envvar="RUNENV_ENVIRONMENT",
    help=f"Where to run ($RUNENV_ENVIRONMENT).  [default: {DEFAULT_ENVIRONMENT}]",
)
@click.option(
    "-e", "--env", "env_pairs", multiple=True, metavar="KEY[=VALUE]",
    help="Set an environment variable of the program (KEY alone: its value here).",
)  # fmt: skip
@click.option(
    "--env-file", multiple=True, type=click.Path(dir_okay=False), help="Read KEY=VALUE lines."
)
@click.option(
    "-f", "--file", "adds", multiple=True, metavar="PATH[:NAME]",
    help="Send a file, or a directory with its tree, into the workspace as NAME.",
)  # fmt: skip
@click.option(
    "-d", "--dir", "directory", type=click.Path(file_okay=False, exists=True),
    help="Send this directory's tree; FILE keeps its path inside it.",
)  # fmt: skip
@click.option("-w", "--workdir", help="Working directory (relative: inside the workspace).")
@click.option(
    "-t", "--timeout", type=click.FloatRange(min=0, min_open=True), default=30.0,
    help="Wall-clock limit of the run, in seconds.",
)  # fmt: skip
@click.option(
    "--compile-timeout", type=click.FloatRange(min=0, min_open=True), default=60.0,
    help="Wall-clock limit of a compile step, in seconds.",
)  # fmt: skip
@click.option("-m", "--memory", type=Size(), help="Memory limit (512m, 1g).")
@click.option(
    "--cpu-time", type=click.FloatRange(min=0, min_open=True), help="CPU seconds per process."
)
@click.option("--pids-limit", type=click.IntRange(min=1), help="Processes and threads at once.")
@click.option("--disk", type=Size(), help="Size of /tmp, and the largest file written.")
@click.option("--output-limit", type=Size(), default="1m", help="Most output kept of each stream.")
@click.option(
    "--network",
    type=click.Choice(["none", "host"]),
    help="none: no network; host: the machine's.  [default: the environment's]",
)
@click.option("--stdin", "stdin_text", help="Text for standard input (default: ours, if piped).")
@click.option(
    "--stdin-file", type=click.Path(dir_okay=False, allow_dash=True), help="File for stdin."
)
@click.option(
    "--no-stdin", is_flag=True, help="Do not pass our standard input on, even when piped."
)
@click.option("--json", "as_json", is_flag=True, help="Print the result (or error) as JSON.")
@click.option(
    "-v", "--verbose", is_flag=True, help="Say where it ran, how long, what was left out."
)
@click.pass_context
def run(ctx: click.Context, /, **flags: Any) -> None:
    """Run FILE (or --code) and exit with the program's status.

    Arguments after FILE go to the program; put them after -- when they start with a dash
    (runenv run app.py -- --verbose). FILE goes into the workspace under its own name
    (with --dir, under its path there), so it can import its neighbours sent with --dir or
    -f. Standard input that is not a terminal goes to the program.

    Exit status: the program's; 124 when it timed out; 128+N when signal N ended it; 2 for
    a usage error; 125 when runenv could not run it.
    """
    _want_json_errors(ctx, flags["as_json"])
    file, code, args = flags["file"], flags["code"], flags["args"]
    if code is not None and file is not None:
        if _file_came_first(ctx.meta.get("runenv.raw", []), file):
            raise Failure("give either FILE or --code, not both")
        args = (file, *args)  # with --code, everything positional is an argument
        file = None
    if file is None and code is None:
        raise Failure("give FILE or --code (runenv run --help)")
    sources = Sources()
    if flags["directory"] is not None:
        sources.add_tree(flags["directory"])
    for add in flags["adds"]:
        sources.add_path(*split_add(add))
    filename = None
    if file is not None:
        data = read_file(file)
        code = program_text(file, data)
        filename = program_file(file, flags["directory"])
    try:
        if flags["language"] is not None:
            language = get_language(flags["language"])
        elif file is not None:
            language = language_for_path(file, code.split("\n", 1)[0] if code else None)
        else:
            language = get_language("python")
    except RunEnvironmentError as exc:
        raise failure(exc) from None
    if filename is not None and not filename.endswith(language.suffix) and language.filename:
        filename = None  # a language with a fixed file name (Java's Main) keeps it
    names = environment_names()
    options: dict[str, Any] = {
        "language": language.name,
        "timeout": flags["timeout"],
        "compile_timeout": flags["compile_timeout"],
        "args": list(args),
        "env": variables(flags["env_pairs"], flags["env_file"], names),
        "files": {k: v for k, v in sources.files.items() if k != filename},
        "filename": filename,
        "cwd": flags["workdir"],
        "max_output_bytes": flags["output_limit"],
        "stdin": standard_input(
            flags["stdin_text"], flags["stdin_file"], attached=not flags["no_stdin"]
        ),
        "limits": {  # checked with the other options, where their errors are reported
            name: value
            for name, value in (
                ("memory", flags["memory"]),
                ("cpu_time", flags["cpu_time"]),
                ("processes", flags["pids_limit"]),
                ("disk", flags["disk"]),
            )
            if value is not None
        },
    }
    if flags["verbose"]:
        for path in sources.skipped:
            err.print(f"[dim]runenv: left out {escape(path)} (not a regular file)[/dim]")
    try:
        env = _environment(flags["environment"], flags["network"])
        result, streamed = run_until_signalled(
            lambda: _execute(env, code or "", options, flags["environment"], flags["as_json"])
        )
    except RunEnvironmentError as exc:
        raise failure(exc) from None
    _report(result, streamed, flags["as_json"], flags["verbose"])
    sys.exit(exit_status(result))


def _environment(name: str | None, network: str | None) -> RunEnvironment:
    """The environment asked for (with its network, when asked), or the sandbox."""
    cls = get_environment_class(name or DEFAULT_ENVIRONMENT)
    kwargs: dict[str, Any] = {}
    if network is not None:
        if "network" in inspect.signature(cls).parameters:
            kwargs["network"] = network == "host"
        elif not (cls.name == "local" and network == "host"):
            raise Failure(f"the {cls.name} environment offers no choice of --network")
    return cls(**kwargs)


async def _execute(
    env: RunEnvironment, code: str, options: dict[str, Any], asked: str | None, as_json: bool
) -> tuple[ExecutionResult, bool]:
    """Run the code (streaming its output unless ``as_json``); whether anything streamed."""
    streamed = False

    def writer(stream: Any) -> RawOutput:
        async def write(data: bytes) -> None:
            nonlocal streamed
            streamed = True
            await anyio.to_thread.run_sync(_write, stream, data)  # a slow reader waits there

        return RawOutput(write)

    if not as_json:
        options = {**options, "on_stdout": writer(sys.stdout), "on_stderr": writer(sys.stderr)}
    try:
        if asked is None:
            status = await env.status()
            if not status.ready:
                raise Failure(
                    f"the sandbox is not ready here: {status.reason}. It isolates code you "
                    "did not write; to run it unisolated with your own permissions instead, "
                    "ask for that with -E local ('runenv doctor' says more)",
                    CANNOT_RUN,
                    "unavailable",
                )
        return await env.execute(code, **options), streamed
    finally:
        with anyio.CancelScope(shield=True):
            await env.cleanup()


def _write(stream: Any, data: bytes) -> None:
    buffer = getattr(stream, "buffer", None)
    if buffer is not None:
        stream.flush()
        buffer.write(data)
        buffer.flush()
    else:
        stream.write(data.decode(errors="replace"))
        stream.flush()


def _report(result: ExecutionResult, streamed: bool, as_json: bool, verbose: bool) -> None:
    if as_json:
        click.echo(result.to_json(indent=2))
        return
    if not streamed:  # an environment that gives its output only in the result
        _write(sys.stdout, result.stdout.encode())
        _write(sys.stderr, result.stderr.encode())
    if result.compile is not None and not result.compile.success:
        _write(sys.stderr, (result.compile.stdout + result.compile.stderr).encode())
    if not result.success:
        err.print(f"[dim]runenv ({result.environment}): {escape(result.error or '')}[/dim]")
    elif verbose or (sys.stderr is not None and sys.stderr.isatty()):
        took = f"{result.execution_time * 1000:.0f} ms"
        err.print(f"[dim]runenv: ran in the {result.environment} environment ({took})[/dim]")
    if result.missing_files and verbose:
        err.print(f"[dim]runenv: not found: {escape(', '.join(result.missing_files))}[/dim]")
