from __future__ import annotations

import os
import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import pytest

from run_environments import LanguageUnavailableError, LocalRunEnvironment, RunEnvironment
from run_environments.environments.local import MARKER
from run_environments.testing import EnvironmentBehaviour, program
from tests.helpers import is_running, processes_whose_environment, wait_until_gone

pytestmark = pytest.mark.anyio


def marked_processes(value: str) -> list[str]:
    """Live processes whose environment carries ``MARKER=value...``."""
    marker = f"{MARKER}={value}".encode()
    return processes_whose_environment(lambda environ: any(v.startswith(marker) for v in environ))


class TestLocal(EnvironmentBehaviour):
    @pytest.fixture
    async def env(self, tmp_path: Path) -> AsyncIterator[LocalRunEnvironment]:
        self.tmp = tmp_path
        async with LocalRunEnvironment(tmp_dir=str(tmp_path)) as env:
            yield env
        assert await self.leftovers(env) == []

    async def leftovers(self, env: RunEnvironment) -> list[str]:
        assert isinstance(env, LocalRunEnvironment)
        processes = marked_processes(env.instance)
        if processes:  # a killed process may take a moment to disappear
            await anyio.sleep(0.5)
            processes = marked_processes(env.instance)
        return [str(p) for p in self.tmp.iterdir()] + processes

    async def test_a_clojure_error_leaves_no_report_file_behind(
        self, env: LocalRunEnvironment
    ) -> None:
        tmp = Path(os.environ.get("TMPDIR", "/tmp"))
        before = set(tmp.glob("clojure-*.edn"))
        result = await env.execute('(throw (ex-info "wrong" {}))', language="clojure")
        assert not result.success
        assert "wrong" in result.stderr  # the report is on stderr, not in a file
        assert set(tmp.glob("clojure-*.edn")) <= before

    async def test_inherits_the_host_environment(self, env: LocalRunEnvironment) -> None:
        os.environ["RUNENV_TEST_INHERITED"] = "yes"
        try:
            result = await env.execute("import os; print(os.environ['RUNENV_TEST_INHERITED'])")
        finally:
            del os.environ["RUNENV_TEST_INHERITED"]
        assert result.stdout == "yes\n"

    async def test_clean_environment_option(self, tmp_path: Path) -> None:
        os.environ["RUNENV_TEST_SECRET"] = "hidden"
        try:
            async with LocalRunEnvironment(inherit_env=False, tmp_dir=str(tmp_path)) as env:
                code = "import os, json; print(json.dumps(sorted(os.environ)))"
                result = await env.execute(code, env={"MINE": "1"})
        finally:
            del os.environ["RUNENV_TEST_SECRET"]
        names = set(eval(result.stdout))
        assert "RUNENV_TEST_SECRET" not in names
        assert {"PATH", "HOME", "LANG", "MINE"} <= names

    async def test_absolute_cwd(self, env: LocalRunEnvironment, tmp_path: Path) -> None:
        place = tmp_path / "elsewhere"
        place.mkdir()
        result = await env.execute("import os; print(os.getcwd())", cwd=str(place))
        assert result.stdout == f"{place}\n"
        place.rmdir()

    async def test_missing_cwd_is_an_error(self, env: LocalRunEnvironment) -> None:
        with pytest.raises(ValueError, match="not a directory"):
            await env.execute("pass", cwd="/no/such/place")

    async def test_missing_interpreter_says_what_to_install(self, tmp_path: Path) -> None:
        async with LocalRunEnvironment(path=str(tmp_path), tmp_dir=str(tmp_path)) as env:
            with pytest.raises(LanguageUnavailableError, match="apt-get install ruby"):
                await env.execute("puts 1", language="ruby")
            support = {lang.name: lang for lang in await env.languages()}
            assert not support["ruby"].available
            assert "ruby" in (support["ruby"].missing or "")
            assert support["python"].available  # this very interpreter
            assert await env.is_ready()

    async def test_not_ready_without_any_tool(self, tmp_path: Path) -> None:
        nothing = str(tmp_path / "python")  # a machine without Python, or any other tool
        async with LocalRunEnvironment(path=str(tmp_path), python=nothing) as env:
            status = await env.status()
            assert not status.ready
            assert status.reason
            assert not await env.is_ready()

    async def test_grandchild_is_killed_when_the_program_ends(
        self, env: LocalRunEnvironment
    ) -> None:
        result = await env.execute(program("grandchild_holds_pipes.sh"), language="bash")
        pid = int(result.stdout.split()[1])
        assert await wait_until_gone(pid)

    async def test_double_forked_daemon_does_not_hang_and_dies_on_cleanup(
        self, env: LocalRunEnvironment
    ) -> None:
        result = await env.execute(program("daemon.py"), timeout=20)
        assert not result.timed_out
        assert result.success
        assert "parent done" in result.stdout
        pid = int(result.stdout.split("daemon ")[1].split()[0])
        assert is_running(pid)  # it left the group: only cleanup finds it
        await env.cleanup()
        assert await wait_until_gone(pid)

    async def test_daemon_dies_when_the_run_times_out(self, env: LocalRunEnvironment) -> None:
        code = program("daemon.py").replace('print("parent done"', 'time.sleep(60)\nprint("x"')
        result = await env.execute(code, timeout=1)
        assert result.timed_out
        pid = int(result.stdout.split("daemon ")[1].split()[0])
        assert await wait_until_gone(pid)

    async def test_cleanup_kills_a_running_execute(self, env: LocalRunEnvironment) -> None:
        started = anyio.Event()
        results = []

        async def run() -> None:
            results.append(
                await env.execute(
                    "import time; print('up', flush=True); time.sleep(60)",
                    on_stdout=lambda text: started.set() if text.endswith("\n") else None,
                )
            )

        async with anyio.create_task_group() as tg:
            tg.start_soon(run)
            await started.wait()
            await env.cleanup()
        assert results[0].signal == "SIGKILL"
        assert results[0].stdout == "up\n"

    async def test_typescript_falls_back_to_ts_node(self, tmp_path: Path) -> None:
        tools = tmp_path / "bin"
        tools.mkdir()
        for tool in ("node", "ts-node"):
            found = shutil.which(tool)
            assert found, f"{tool} is installed by the project's setup"
            (tools / tool).symlink_to(found)
        async with LocalRunEnvironment(path=str(tools), tmp_dir=str(tmp_path)) as env:
            support = {lang.name: lang for lang in await env.languages()}
            assert (support["typescript"].command or "").endswith("ts-node")
            result = await env.execute(
                "const n: number = 41;\nconsole.log(n + 1);", language="typescript"
            )
        assert result.stdout == "42\n", result
