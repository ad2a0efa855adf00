"""The behaviour every run environment shares (see :mod:`run_environments.testing`).

A test module subclasses :class:`EnvironmentBehaviour` and provides an ``env`` fixture and
:meth:`EnvironmentBehaviour.leftovers`.
"""

from __future__ import annotations

import abc
import json
from collections.abc import Callable, Iterable, Mapping
from typing import Any, ClassVar, TypeVar

import anyio
import pytest

from run_environments import (
    ExecutionOptions,
    InvalidOptionsError,
    LanguageUnavailableError,
    LiveInput,
    RunEnvironment,
    UnknownLanguageError,
    get_language,
    language_names,
)

from .samples import ECHO, FAILED_ASSERTION, HELLO, RUNNERS, SQL_STDIN_AND_ARGS, program

PROGRAMS = [name for name in language_names() if not get_language(name).runner]
"""The languages whose code is a program (the others are test runners: :data:`RUNNERS`)."""

RESULT_FIELDS = {
    "success", "stdout", "stderr", "exit_code", "execution_time", "error", "timed_out", "signal",
    "stdout_truncated", "stderr_truncated", "language", "environment", "compile",
    "oom_killed", "cpu_time", "memory_peak", "files", "missing_files",
}  # fmt: skip


def rss_bytes() -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


F = TypeVar("F", bound=Callable[..., Any])


def _over(languages: Iterable[str]) -> Callable[[F], F]:
    """Run the test once for each of ``languages`` the environment offers."""

    def mark(test: F) -> F:
        test.languages = tuple(languages)  # type: ignore[attr-defined]
        return test

    return mark


@pytest.mark.anyio  # on the class, so that subclasses in other modules inherit it
class EnvironmentBehaviour(abc.ABC):
    """The shared suite. ``languages`` lists what the environment must run."""

    languages: ClassVar[tuple[str, ...]] = tuple(language_names())
    live_input: ClassVar[bool] = True
    """Whether the environment takes a :class:`~run_environments.LiveInput` (a remote
    server's API does not: its module checks the refusal instead)."""

    @abc.abstractmethod
    async def leftovers(self, env: RunEnvironment) -> list[str]:
        """What the environment still has running or stored (processes, workspaces...),
        each named; empty when clean. Every environment must say: the suite's cleanup
        tests rely on it."""

    refuses_other_languages: ClassVar[bool] = False
    """Whether the environment refuses every language beyond :attr:`languages` (with
    :class:`~run_environments.LanguageUnavailableError`): the tests of those languages
    then check the refusal, as expected failures, rather than not running."""
    unsupported: ClassVar[Mapping[str, str]] = {}
    """Tests of what the environment cannot do, each with the reason: such a test must
    fail with :class:`~run_environments.LanguageUnavailableError` (the environment's precise
    refusal), and is reported as an expected failure with the reason; passing, or failing
    otherwise, fails it."""

    @pytest.fixture(autouse=True)
    def _declared_unsupported(self, request: pytest.FixtureRequest) -> None:
        reason = self.unsupported.get(request.node.originalname)
        if reason is not None:
            mark = pytest.mark.xfail(raises=LanguageUnavailableError, strict=True, reason=reason)
            request.applymarker(mark)

    def result_environment(self, env: RunEnvironment) -> str:
        """The ``environment`` results report (where the code really ran)."""
        return env.name

    def pytest_generate_tests(self, metafunc: pytest.Metafunc) -> None:
        """A test made for many languages runs for each of them this environment offers
        (none offered: it runs for none, rather than being skipped)."""
        names = getattr(metafunc.function, "languages", None)
        if names is not None:
            offered: list[Any] = [n for n in names if n in self.languages]
            if self.refuses_other_languages:
                refused = pytest.mark.xfail(
                    raises=LanguageUnavailableError, strict=True, reason="not offered here"
                )
                offered += [
                    pytest.param(n, marks=refused) for n in names if n not in self.languages
                ]
            metafunc.parametrize("language", offered)

    # -- every language -------------------------------------------------------------------
    @_over(PROGRAMS)
    async def test_hello_world(self, env: RunEnvironment, language: str) -> None:
        result = await env.execute(HELLO[language], language=language)
        assert result.success, result
        assert result.stdout == f"hello from {language}\n"
        assert result.exit_code == 0
        assert result.error is None
        assert result.language == language
        assert result.environment == self.result_environment(env)
        if get_language(language).compiled:
            assert result.compile is not None
            assert result.compile.success
        else:
            assert result.compile is None

    @_over(sorted(ECHO))
    async def test_stdin_and_args(self, env: RunEnvironment, language: str) -> None:
        result = await env.execute(
            ECHO[language], language=language, stdin="line one\nline two\n", args=["first"]
        )
        assert result.stdout == "first:line one\n", result
        assert result.success

    async def test_dev_stdin_and_dev_stdout_open_as_files(self, env: RunEnvironment) -> None:
        """Judges' solutions read ``/dev/stdin`` by name (Node's ``readFileSync``, ``cat``,
        SQLite's ``.import``) and write ``/dev/stdout`` and ``/dev/stderr``."""
        code = "cat /dev/stdin > /dev/stdout\necho err > /dev/stderr"
        result = await env.execute(code, language="bash", stdin="through the names\n")
        assert (result.stdout, result.stderr) == ("through the names\n", "err\n"), result

    @_over(["javascript"])
    async def test_node_reads_dev_stdin_by_name(self, env: RunEnvironment, language: str) -> None:
        code = "console.log(require('fs').readFileSync('/dev/stdin', 'utf8').trim())"
        result = await env.execute(code, language="javascript", stdin="from node\n")
        assert result.stdout == "from node\n", result

    @_over(["sql"])
    async def test_sql_reads_stdin_by_import_and_takes_arguments_as_more_sql(
        self, env: RunEnvironment, language: str
    ) -> None:
        code, args, expected = SQL_STDIN_AND_ARGS
        result = await env.execute(code, language="sql", stdin="line one\nline two\n", args=args)
        assert (result.success, result.stdout) == (True, expected), result

    @_over(["sql"])
    async def test_sql_stops_at_its_first_error(self, env: RunEnvironment, language: str) -> None:
        result = await env.execute("SELECT 1;\nSELECT nope;\nSELECT 2;", language="sql")
        assert (result.success, result.exit_code, result.stdout) == (False, 1, "1\n"), result
        assert "no such column: nope" in result.stderr

    @_over(["junit"])
    async def test_junit_without_a_test_is_a_failure(
        self, env: RunEnvironment, language: str
    ) -> None:
        code = "public class Nothing { static int add(int a, int b) { return a + b; } }"
        result = await env.execute(code, language="junit", timeout=60)
        assert not result.success, result  # not a vacuous pass
        assert "0 tests found" in result.stdout, result

    @_over(sorted(RUNNERS))
    async def test_a_test_runner_passes_only_when_every_test_passes(
        self, env: RunEnvironment, language: str
    ) -> None:
        code, failing, only_passing = RUNNERS[language]
        result = await env.execute(code, language=language, timeout=60)
        assert not result.success, result
        assert result.exit_code == 1, result
        assert failing in result.stdout + result.stderr, result
        if only_passing is not None:  # the runner's own arguments select the passing test
            result = await env.execute(code, language=language, args=only_passing, timeout=60)
            assert result.success, result
            assert failing not in result.stdout + result.stderr, result

    @_over(sorted(FAILED_ASSERTION))
    async def test_a_failed_assertion_fails_the_run(
        self, env: RunEnvironment, language: str
    ) -> None:
        """Assertions are on in every language (Java's -ea, PHP's zend.assertions): a wrong
        answer checked with ``assert`` is never judged a success."""
        result = await env.execute(FAILED_ASSERTION[language], language=language)
        assert not result.success, result
        assert result.exit_code != 0 or result.signal is not None
        assert "not checked" not in result.stdout

    @_over(["java"])
    async def test_a_java_file_is_named_after_its_public_class(
        self, env: RunEnvironment, language: str
    ) -> None:
        code = ("public class Greeter { public static void main(String[] a) {"
                ' System.out.println("greeted"); } }')  # fmt: skip
        result = await env.execute(code, language="java")
        assert (result.success, result.stdout) == (True, "greeted\n"), result

    # -- options --------------------------------------------------------------------------
    async def test_default_language_is_python(self, env: RunEnvironment) -> None:
        result = await env.execute("import sys; print(sys.version_info[0])")
        assert (result.stdout, result.language) == ("3\n", "python")

    async def test_aliases_resolve(self, env: RunEnvironment) -> None:
        result = await env.execute("echo $0 ok", language="SH")
        assert result.stdout.endswith(" ok\n")
        assert result.language == "bash"

    async def test_args_are_not_split_or_expanded(self, env: RunEnvironment) -> None:
        args = ["two words", "$HOME", "*", "", "ünï"]
        result = await env.execute("import sys, json; print(json.dumps(sys.argv[1:]))", args=args)
        assert json.loads(result.stdout) == args

    async def test_binary_stdin(self, env: RunEnvironment) -> None:
        data = bytes(range(256))
        code = "import sys; d = sys.stdin.buffer.read(); print(len(d), d == bytes(range(256)))"
        result = await env.execute(code, stdin=data)
        assert result.stdout == "256 True\n"

    async def test_large_stdin_is_fed_while_output_is_drained(self, env: RunEnvironment) -> None:
        code = "import sys\nfor line in sys.stdin: sys.stdout.write(line)"
        text = "".join(f"{i:07d}\n" for i in range(200_000))  # 1.6 MB each way
        result = await env.execute(code, stdin=text, max_output_bytes=4 << 20)
        assert result.success
        assert result.stdout == text

    async def test_files_are_written_before_the_run(self, env: RunEnvironment) -> None:
        files = {"data/input.txt": "from a file", "blob.bin": b"\x00\x01\xff"}
        code = "print(open('data/input.txt').read())\nprint(list(open('blob.bin', 'rb').read()))"
        result = await env.execute(code, files=files)
        assert result.stdout == "from a file\n[0, 1, 255]\n", result

    async def test_fetch_files_after_the_run(self, env: RunEnvironment) -> None:
        code = (
            "import os\nos.makedirs('out', exist_ok=True)\n"
            "open('out/result.bin', 'wb').write(bytes([0, 255, 7]))\n"
            "open('report.txt', 'w').write('done')\nos.symlink('/etc/hostname', 'link')"
        )
        fetch = ["out/result.bin", "report.txt", "missing.txt", "link", "out"]
        result = await env.execute(code, fetch_files=fetch)
        assert result.files == {"out/result.bin": b"\x00\xff\x07", "report.txt": b"done"}
        data = json.loads(result.to_json())
        assert data["files"] == {"out/result.bin": "AP8H", "report.txt": "ZG9uZQ=="}
        assert type(result).from_dict(data) == result

    @pytest.mark.parametrize("path", ["/etc/passwd", "../escape.txt", "a/../../b", ""])
    async def test_files_must_stay_inside(self, env: RunEnvironment, path: str) -> None:
        with pytest.raises(InvalidOptionsError):
            await env.execute("pass", files={path: "x"})

    async def test_env_vars(self, env: RunEnvironment) -> None:
        result = await env.execute(
            "import os; print(os.environ['GREETING'], os.environ['EMPTY'] == '')",
            env={"GREETING": "hi there", "EMPTY": ""},
        )
        assert result.stdout == "hi there True\n"

    async def test_relative_cwd_is_inside_the_workspace(self, env: RunEnvironment) -> None:
        code = "import os; print(os.path.basename(os.getcwd())); print(open('../f.txt').read())"
        result = await env.execute(code, cwd="sub/dir", files={"sub/f.txt": "sibling"})
        assert result.stdout == "dir\nsibling\n", result

    async def test_options_object_and_overrides(self, env: RunEnvironment) -> None:
        options = ExecutionOptions(language="bash", env={"A": "1"})
        result = await env.execute("echo $A$B", options, env={"A": "2", "B": "3"})
        assert result.stdout == "23\n"
        assert (await env.execute("echo $A", options)).stdout == "1\n"

    async def test_unknown_option_is_an_error(self, env: RunEnvironment) -> None:
        with pytest.raises(InvalidOptionsError, match="timeuot"):
            await env.execute("pass", timeuot=3)

    async def test_unknown_language_names_supported_ones(self, env: RunEnvironment) -> None:
        with pytest.raises(UnknownLanguageError) as caught:
            await env.execute("x", language="cobol")
        assert "cobol" in str(caught.value)
        assert "python" in str(caught.value)
        assert "typescript" in caught.value.supported

    # -- failures are results -------------------------------------------------------------
    async def test_nonzero_exit_is_a_result(self, env: RunEnvironment) -> None:
        result = await env.execute("import sys; print('out'); sys.exit(3)")
        assert not result.success
        assert not result
        assert (result.exit_code, result.stdout, result.signal) == (3, "out\n", None)
        assert result.error == "exited with code 3"

    async def test_exception_traceback_in_stderr(self, env: RunEnvironment) -> None:
        result = await env.execute("raise ValueError('boom')")
        assert result.exit_code == 1
        assert "ValueError: boom" in result.stderr

    async def test_killed_by_signal(self, env: RunEnvironment) -> None:
        result = await env.execute("kill -SEGV $$", language="bash")
        assert (result.exit_code, result.signal, result.success) == (None, "SIGSEGV", False)
        assert result.error == "killed by SIGSEGV"

    @_over(["c"])
    async def test_compile_error_is_a_result(self, env: RunEnvironment, language: str) -> None:
        result = await env.execute("int main(void) { return undefined_name; }", language="c")
        assert not result.success
        assert result.compile is not None
        assert not result.compile.success
        assert result.compile.exit_code != 0
        assert "undefined_name" in result.compile.stderr
        assert result.error is not None
        assert result.error.startswith("compilation failed")

    async def test_result_serialises_with_the_documented_names(self, env: RunEnvironment) -> None:
        result = await env.execute("print('x')")
        data = json.loads(result.to_json())
        assert set(data) == RESULT_FIELDS
        assert type(result).from_dict(data) == result

    # -- time limits ----------------------------------------------------------------------
    async def test_timeout_keeps_partial_output(self, env: RunEnvironment) -> None:
        code = "import time\nprint('before', flush=True)\ntime.sleep(60)\nprint('after')"
        result = await env.execute(code, timeout=1)
        assert result.timed_out
        assert not result.success
        assert result.stdout == "before\n"
        assert result.error == "timed out after 1 s"
        assert result.signal in ("SIGTERM", "SIGKILL")
        assert await self.leftovers(env) == []

    async def test_sigterm_ignoring_child_is_killed(self, env: RunEnvironment) -> None:
        result = await env.execute(program("ignores_sigterm.py"), timeout=1)
        assert result.timed_out
        assert result.signal == "SIGKILL"
        assert result.stdout.startswith("ready ")
        assert await self.leftovers(env) == []

    async def test_grandchild_holding_pipes_does_not_hang(self, env: RunEnvironment) -> None:
        result = await env.execute(program("grandchild_holds_pipes.sh"), language="bash")
        assert result.success
        assert result.stdout.startswith("grandchild ")
        assert not result.timed_out
        assert await self.leftovers(env) == []

    # -- output ---------------------------------------------------------------------------
    async def test_output_flood_is_bounded(self, env: RunEnvironment) -> None:
        before = rss_bytes()
        result = await env.execute(program("floods.py"), max_output_bytes=1 << 20, timeout=60)
        assert result.stdout_truncated
        assert not result.timed_out
        assert not result.success
        assert len(result.stdout) == 1 << 20
        assert "output limit" in (result.error or "")
        assert rss_bytes() - before < 64 << 20  # 1 GiB was offered
        assert await self.leftovers(env) == []

    async def test_stderr_has_its_own_bound(self, env: RunEnvironment) -> None:
        code = "import sys; print('fine'); sys.stderr.write('e' * 5000)"
        result = await env.execute(code, max_output_bytes=1000)
        assert result.stderr == "e" * 1000
        assert result.stderr_truncated
        assert not result.stdout_truncated

    async def test_binary_output_is_replaced_not_raised(self, env: RunEnvironment) -> None:
        result = await env.execute(program("binary_output.py"))
        assert result.success
        assert "\ufffd" in result.stdout
        assert "\ufffd" in result.stderr
        assert "not utf-8" in result.stderr
        assert result.stdout.startswith("".join(chr(i) for i in range(128)))

    async def test_callbacks_receive_the_output(self, env: RunEnvironment) -> None:
        out: list[str] = []
        err: list[str] = []

        async def on_stdout(text: str) -> None:  # coroutine callbacks are awaited
            out.append(text)

        code = "import sys\nprint('one')\nsys.stderr.write('two\\n')\nprint('ü' * 70000)"
        result = await env.execute(code, on_stdout=on_stdout, on_stderr=err.append)
        assert "".join(out) == result.stdout == "one\n" + "ü" * 70000 + "\n"
        assert "".join(err) == result.stderr == "two\n"

    async def test_callback_error_propagates_and_stops_the_run(self, env: RunEnvironment) -> None:
        def explode(text: str) -> None:
            raise RuntimeError("callback failed")

        with pytest.raises(RuntimeError, match="callback failed"):
            await env.execute(
                "import time; print('x', flush=True); time.sleep(60)", on_stdout=explode
            )
        assert await self.leftovers(env) == []

    # -- input written while the program runs ----------------------------------------
    async def takes_live_input(self, env: RunEnvironment) -> bool:
        """Whether the environment takes a LiveInput; one that does not must refuse it
        with a precise error (checked here), never run without its input."""
        if not self.live_input:
            with pytest.raises(InvalidOptionsError, match="input written while"):
                await env.execute("print(input())", stdin=LiveInput())
        return self.live_input

    async def test_live_input_answers_the_program_as_it_asks(self, env: RunEnvironment) -> None:
        if not await self.takes_live_input(env):
            return
        live = LiveInput()
        await live.write("first\n")  # before the program starts: it waits for it

        heard = ""  # output comes in chunks of any size

        async def answer(text: str) -> None:
            nonlocal heard
            heard += text
            if heard == "got first\n":
                await live.write("second\n")
            if heard == "got first\ngot second\n":
                live.close()

        code = (
            "import sys\nfor line in sys.stdin:\n"
            "    print('got', line.strip(), flush=True)\nprint('end of input')"
        )
        result = await env.execute(code, stdin=live, on_stdout=answer, timeout=20)
        assert result.stdout == "got first\ngot second\nend of input\n", result
        assert result.success
        assert not result.timed_out

    async def test_live_input_signals_the_program(self, env: RunEnvironment) -> None:
        if not await self.takes_live_input(env):
            return
        live = LiveInput()
        code = "import time\nprint('waiting', flush=True)\ntime.sleep(60)"
        result = await env.execute(
            code, stdin=live, on_stdout=lambda _: live.signal("SIGTERM"), timeout=20
        )
        assert not result.timed_out, result  # ended by the signal, not by the deadline
        assert result.signal in ("SIGTERM", "SIGKILL"), result  # E2B's API: SIGKILL only
        live.signal("SIGINT")  # the program is over: nothing to deliver, and no error
        with pytest.raises(InvalidOptionsError, match="not a signal"):
            live.signal("SIGNOTHING")

    async def test_live_input_writer_waits_while_too_much_is_pending(
        self, env: RunEnvironment
    ) -> None:
        if not await self.takes_live_input(env):
            return
        live = LiveInput(max_pending=1024)
        chunk = b"x" * 1024
        written = 0  # writes that returned while the program ran

        async def writer() -> None:
            nonlocal written
            for _ in range(1024):  # 1 MiB: more than any pipe or channel holds
                await live.write(chunk)
                if live.finished:
                    return
                written += 1

        code = "import time\nprint('not reading', flush=True)\ntime.sleep(2)"
        async with anyio.create_task_group() as tg:
            tg.start_soon(writer)
            result = await env.execute(code, stdin=live, timeout=20)
        assert result.success, result
        assert 0 < written < 1024  # it waited for room, and was let go at the end

    async def test_a_live_input_serves_one_run(self, env: RunEnvironment) -> None:
        if not await self.takes_live_input(env):
            return
        live = LiveInput()
        live.close()
        result = await env.execute("import sys\nprint(repr(sys.stdin.read()))", stdin=live)
        assert result.stdout == "''\n", result
        with pytest.raises(InvalidOptionsError, match="one run"):
            await env.execute("pass", stdin=live)

    # -- concurrency, cancellation, cleanup ---------------------------------------------
    async def test_cancelling_a_running_execute(self, env: RunEnvironment) -> None:
        started = anyio.Event()
        with anyio.move_on_after(30):
            async with anyio.create_task_group() as tg:

                async def run() -> None:
                    await env.execute(
                        "import time\nprint('running', flush=True)\ntime.sleep(60)",
                        on_stdout=lambda _: started.set(),
                    )

                tg.start_soon(run)
                await started.wait()
                tg.cancel_scope.cancel()
        assert started.is_set()
        assert await self.leftovers(env) == []

    async def test_fifty_concurrent_executes(self, env: RunEnvironment) -> None:
        results: dict[int, str] = {}

        async def one(i: int) -> None:
            result = await env.execute(
                "import os, sys; print(sys.argv[1], open('mine.txt').read())",
                args=[str(i)],
                files={"mine.txt": f"file-{i}"},
            )
            results[i] = result.stdout

        async with anyio.create_task_group() as tg:
            for i in range(50):
                tg.start_soon(one, i)
        assert results == {i: f"{i} file-{i}\n" for i in range(50)}
        assert await self.leftovers(env) == []

    async def test_nothing_left_behind_after_cleanup(self, env: RunEnvironment) -> None:
        await env.execute("print('ok')")
        await env.execute("import time; time.sleep(60)", timeout=0.5)
        if "bash" in self.languages:  # a process left running in the background
            await env.execute("sleep 100 & echo started", language="bash")
        await env.cleanup()
        assert await self.leftovers(env) == []
        assert await env.is_ready()  # still usable after cleanup
        assert (await env.execute("print('again')")).stdout == "again\n"

    async def test_is_ready_and_status(self, env: RunEnvironment) -> None:
        assert await env.is_ready()
        status = await env.status()
        assert status.ready
        assert status.name == env.name
        available = {lang.name for lang in status.languages if lang.available}
        assert set(self.languages) <= available
