"""The supervisor for processes that are not children of the pipeline, driven through
:class:`RemoteCalls` built on a real process of this machine (as a Docker exec or an SSH
channel would be: start, stream, feed, terminate, kill, wait)."""

from __future__ import annotations

import contextlib
import dataclasses
import signal
import subprocess
import sys
from collections.abc import AsyncIterator

import anyio
import pytest

from run_environments import ExecutionOptions, InvalidOptionsError, LiveInput, get_language
from run_environments.environments.command import build_command
from run_environments.extension import Command, RemoteCalls, supervise_remote

pytestmark = pytest.mark.anyio

PYTHON = get_language("python")


def command(timeout: float = 10, **options: object) -> Command:
    return build_command(
        ["unused"],
        "/",
        ExecutionOptions(timeout=timeout, **options),  # type: ignore[arg-type]
        PYTHON,
        compile=False,
        outside=("/",),
    )


@contextlib.asynccontextmanager
async def process_calls(
    code: str, *, can_terminate: bool = True, state: dict[str, anyio.abc.Process] | None = None
) -> AsyncIterator[RemoteCalls]:
    """RemoteCalls for ``python -c code``; ``can_terminate`` false is an API without SIGTERM;
    ``state["process"]`` is the process, once started."""
    state = {} if state is None else state
    failures: list[Exception] = []  # a callback's, raised by wait() as a transport does
    failed = anyio.Event()
    pumped = [anyio.Event(), anyio.Event()]
    async with anyio.create_task_group() as tg:

        async def start(sink: object) -> None:
            process = await anyio.open_process(
                [sys.executable, "-c", code],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
            )
            state["process"] = process

            async def pump(name: str, stream: anyio.abc.ByteReceiveStream, done: anyio.Event):
                try:
                    async for chunk in stream:
                        await sink(name, chunk)  # type: ignore[operator]
                except Exception as exc:
                    failures.append(exc)
                    failed.set()
                finally:
                    done.set()

            assert process.stdout is not None and process.stderr is not None
            tg.start_soon(pump, "stdout", process.stdout, pumped[0])
            tg.start_soon(pump, "stderr", process.stderr, pumped[1])

        async def wait() -> tuple[int | None, str | None]:
            codes: list[int] = []
            async with anyio.create_task_group() as waiting:

                async def ends() -> None:
                    codes.append(await state["process"].wait())
                    for done in pumped:
                        await done.wait()
                    waiting.cancel_scope.cancel()

                async def fails() -> None:
                    await failed.wait()
                    waiting.cancel_scope.cancel()

                waiting.start_soon(ends)
                waiting.start_soon(fails)
            if failures:
                raise failures[0]
            code = codes[0]
            return (code, None) if code >= 0 else (None, signal.Signals(-code).name)

        async def kill() -> None:
            if "process" in state and state["process"].returncode is None:
                state["process"].send_signal(signal.SIGKILL)

        async def terminate() -> None:
            state["process"].send_signal(signal.SIGTERM)

        async def feed(data: bytes) -> None:
            stdin = state["process"].stdin
            assert stdin is not None
            await stdin.send(data)
            await stdin.aclose()

        yield RemoteCalls(
            start=start,
            wait=wait,
            kill=kill,
            feed=feed,
            terminate=terminate if can_terminate else None,
        )
        tg.cancel_scope.cancel()
        if "process" in state:
            with contextlib.suppress(ProcessLookupError):
                state["process"].kill()
            await state["process"].aclose()


TRAPS_TERM = """
import signal, sys, time
def bye(*_):
    print("cleaned up", flush=True)
    sys.exit(3)
signal.signal(signal.SIGTERM, bye)
print("ready", flush=True)
time.sleep(60)
"""


async def test_at_the_deadline_the_process_is_asked_to_stop_first() -> None:
    async with process_calls(TRAPS_TERM) as calls:
        outcome = await supervise_remote(calls, command(timeout=1), kill_wait=2, kill_grace=5)
    assert outcome.timed_out
    assert outcome.exit_code == 3
    assert outcome.stdout == b"ready\ncleaned up\n"


async def test_without_sigterm_the_process_is_killed_at_the_deadline() -> None:
    async with process_calls(TRAPS_TERM, can_terminate=False) as calls:
        outcome = await supervise_remote(calls, command(timeout=1), kill_wait=2, kill_grace=5)
    assert outcome.timed_out
    assert (outcome.exit_code, outcome.signal) == (None, "SIGKILL")
    assert outcome.stdout == b"ready\n"


async def test_a_process_that_ignores_sigterm_is_killed_after_the_grace() -> None:
    code = "import signal, time\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\ntime.sleep(60)"
    async with process_calls(code) as calls:
        with anyio.fail_after(20):
            outcome = await supervise_remote(calls, command(timeout=1), kill_wait=2, kill_grace=0.5)
    assert outcome.timed_out
    assert outcome.signal == "SIGKILL"


async def test_output_past_the_bound_stops_the_process() -> None:
    code = "import sys\nwhile True: sys.stdout.write('x' * 4096)"
    async with process_calls(code) as calls:
        outcome = await supervise_remote(
            calls, command(max_output_bytes=10_000), kill_wait=2, kill_grace=0.5
        )
    assert not outcome.timed_out
    assert outcome.stdout_truncated
    assert outcome.stdout == b"x" * 10_000
    assert outcome.signal == "SIGKILL"


async def test_standard_input_callbacks_and_exit_code() -> None:
    seen: list[str] = []
    code = "import sys\ndata = sys.stdin.read()\nprint(data.upper())\nsys.exit(5)"
    async with process_calls(code) as calls:
        outcome = await supervise_remote(
            calls, command(stdin="hello", on_stdout=seen.append), kill_wait=2
        )
    assert (outcome.exit_code, outcome.signal, outcome.timed_out) == (5, None, False)
    assert outcome.stdout == b"HELLO\n"
    assert "".join(seen) == "HELLO\n"


async def test_a_failing_callback_raises_and_the_process_is_killed() -> None:
    def refuse(text: str) -> None:
        raise LookupError("the caller's own")

    code = "import time\nprint('one', flush=True)\ntime.sleep(60)"
    state: dict[str, anyio.abc.Process] = {}
    async with process_calls(code, state=state) as calls:
        with anyio.fail_after(20), pytest.raises(LookupError, match="the caller's own"):
            await supervise_remote(calls, command(on_stdout=refuse), kill_wait=2)
        with anyio.fail_after(5):  # the supervisor killed it: its end comes at once
            assert await state["process"].wait() == -signal.SIGKILL


async def test_live_input_needs_an_api_that_sends_while_running() -> None:
    async with process_calls("print(1)") as calls:
        with pytest.raises(InvalidOptionsError, match="does not take input written while"):
            await supervise_remote(calls, command(stdin=LiveInput()), kill_wait=2)


async def test_live_input_reaches_a_remote_process_and_ends_it_with_eof() -> None:
    state: dict[str, anyio.abc.Process] = {}
    live = LiveInput()
    async with process_calls("import sys\nprint(sys.stdin.read().upper())", state=state) as calls:

        async def send(data: bytes) -> None:
            stdin = state["process"].stdin
            assert stdin is not None
            await stdin.send(data)

        calls = dataclasses.replace(calls, send=send)
        await live.write("written ")
        async with anyio.create_task_group() as tg:

            async def more() -> None:
                await anyio.sleep(0.2)
                await live.write("while running")
                live.close()

            tg.start_soon(more)
            outcome = await supervise_remote(calls, command(stdin=live), kill_wait=2)
    assert outcome.stdout == b"WRITTEN WHILE RUNNING\n"
    assert outcome.exit_code == 0
