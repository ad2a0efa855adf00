"""What every ``runenv`` command shares: exit statuses, errors (one line, or JSON), and
signals that end a command the way Ctrl-C does.

Exit statuses, as ``docker run`` and shells use them: the program's own status; 124 when it
timed out; 128+N when a signal N ended it; 2 for a usage error (an unknown option, a missing
file, an unknown language, a bad value); 125 when runenv could not run the program (the
environment is not ready, a service failed); 130, 143 and 129 when runenv itself got SIGINT,
SIGTERM or SIGHUP (it stops the program and removes what it made first).
"""

from __future__ import annotations

import json
import signal
import sys
from collections.abc import Awaitable, Callable
from typing import Any, NoReturn, TypeVar

import anyio
import click
from rich.console import Console
from rich.markup import escape

from .._errors import (
    EnvironmentUnavailableError,
    InvalidOptionsError,
    RunEnvironmentError,
    UnknownEnvironmentError,
)

USAGE = 2
"""A command line, file or value runenv cannot use."""
CANNOT_RUN = 125
"""runenv could not run the program (the environment, or a service, failed)."""
TIMEOUT = 124
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)

err = Console(stderr=True, highlight=False, soft_wrap=True)
T = TypeVar("T")


class Failure(click.ClickException):
    """An error that ends a command with one line (or a JSON document) and ``status``."""

    def __init__(self, message: str, status: int = USAGE, kind: str = "usage") -> None:
        super().__init__(message)
        self.exit_code = status  # type: ignore[misc]  # click's class default is 1
        self.kind = kind

    def show(self, file: Any = None) -> None:  # click calls it on the way out
        if _json_errors():
            document = {"error": {"type": self.kind, "message": self.message}}
            click.echo(json.dumps(document), file=sys.stdout)
        else:
            err.print(f"runenv: {escape(self.message)}")


_JSON_ERRORS: list[bool] = [False]


def _json_errors() -> bool:
    return _JSON_ERRORS[0]


def want_json_errors(context: click.Context, as_json: bool) -> None:
    """Errors of this command are JSON documents on stdout when ``--json`` is given."""
    _JSON_ERRORS[0] = as_json


def failure(exc: RunEnvironmentError) -> Failure:
    """The command-line error for one of the library's."""
    if isinstance(exc, InvalidOptionsError | UnknownEnvironmentError):
        return Failure(str(exc), USAGE, "invalid")
    if isinstance(exc, EnvironmentUnavailableError):
        return Failure(str(exc), CANNOT_RUN, "unavailable")
    return Failure(str(exc), CANNOT_RUN, type(exc).__name__)


class Stopped(Exception):
    """runenv got a signal that ends it; what it started is stopped and removed."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def run_until_signalled(work: Callable[[], Awaitable[T]]) -> T:
    """``anyio.run(work)``, ended by SIGINT, SIGTERM or SIGHUP as by Ctrl-C: ``work`` is
    cancelled (its cleanup runs) and the command exits with 128+N.

    :raises RunEnvironmentError: as ``work`` raises it.
    """

    async def main() -> T:
        got: list[int] = []
        result: list[T] = []
        failed: list[Exception] = []
        with anyio.open_signal_receiver(*STOP_SIGNALS) as signals:
            async with anyio.create_task_group() as tg:

                async def watch() -> None:
                    async for signum in signals:
                        got.append(signum)
                        tg.cancel_scope.cancel()
                        return

                tg.start_soon(watch)
                try:
                    result.append(await work())
                except Exception as exc:  # raised below, outside the task group
                    failed.append(exc)
                tg.cancel_scope.cancel()
        if got:
            raise Stopped(got[0])
        if failed:
            raise failed[0]
        return result[0]

    try:
        return anyio.run(main)
    except Stopped as stopped:
        exit_now(128 + stopped.signum, f"stopped by {stopped}")


def exit_now(status: int, message: str | None = None) -> NoReturn:
    if message:
        err.print(f"runenv: {escape(message)}")
    sys.exit(status)
