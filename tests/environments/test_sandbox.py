from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import anyio
import anyio.abc
import pytest

from run_environments import (
    EnvironmentUnavailableError,
    InvalidOptionsError,
    Limits,
    LocalRunEnvironment,
    RunEnvironment,
)
from run_environments.environments.sandbox import SandboxRunEnvironment
from run_environments.environments.sandbox import cgroups as cgroup_support
from run_environments.testing import EnvironmentBehaviour
from tests.sandboxing import sandbox_leftovers

pytestmark = pytest.mark.anyio


class TestSandbox(EnvironmentBehaviour):
    @pytest.fixture
    async def env(self, sandbox: SandboxRunEnvironment, shared_tmp: Path) -> SandboxRunEnvironment:
        self.tmp = shared_tmp
        return sandbox

    async def leftovers(self, env: RunEnvironment) -> list[str]:
        assert isinstance(env, SandboxRunEnvironment)
        return await sandbox_leftovers(env, self.tmp)


# -- limits -------------------------------------------------------------------------------
async def test_memory_limit_reports_oom(sandbox: SandboxRunEnvironment) -> None:
    code = "chunks = []\nwhile True:\n    chunks.append(bytearray(16 << 20))"
    result = await sandbox.execute(code, limits=Limits(memory=64 << 20), timeout=30)
    assert result.oom_killed and not result.success and not result.timed_out
    assert result.signal == "SIGKILL" and result.error == "killed: out of memory"
    assert result.memory_peak is not None and result.memory_peak <= 64 << 20


async def test_measures_cpu_and_memory(sandbox: SandboxRunEnvironment) -> None:
    code = "x = bytearray(40 << 20)\nn = 0\nfor i in range(3_000_000): n += i"
    result = await sandbox.execute(code)
    assert result.success
    assert result.memory_peak is not None and result.memory_peak >= 40 << 20
    assert result.cpu_time is not None and result.cpu_time > 0


async def test_process_limit(sandbox: SandboxRunEnvironment) -> None:
    code = (
        "import subprocess\nprocs = []\n"
        "try:\n"
        "    for _ in range(50): procs.append(subprocess.Popen(['sleep', '30']))\n"
        "except OSError as e: print('refused after', len(procs), type(e).__name__)\n"
        "for p in procs: p.kill()"
    )
    result = await sandbox.execute(code, limits=Limits(processes=10), timeout=30)
    assert result.stdout.startswith("refused after "), result
    assert int(result.stdout.split()[2]) < 10


async def test_cpu_time_limit(sandbox: SandboxRunEnvironment) -> None:
    result = await sandbox.execute("while True: pass", limits=Limits(cpu_time=1), timeout=20)
    assert not result.timed_out and result.signal == "SIGXCPU"
    # The kernel checks RLIMIT_CPU against tick-sampled time, which charges a whole tick to
    # whoever runs at it; the cgroup counts exact run time. On a busy machine the two part by
    # a tenth (0.89 s measured under two suites at once), so the bound is loose on purpose.
    assert result.cpu_time is not None and 0.5 <= result.cpu_time <= 5


async def test_disk_limit_on_tmp(sandbox: SandboxRunEnvironment) -> None:
    code = (
        "import errno\nn = 0\n"
        "try:\n"
        "    with open('/tmp/fill', 'wb') as f:\n"
        "        while True: f.write(b'x' * (1 << 20)); n += 1\n"
        "except OSError as e: print(errno.errorcode[e.errno], n)"
    )
    result = await sandbox.execute(code, limits=Limits(disk=8 << 20))
    error, megabytes = result.stdout.split()
    assert error in ("ENOSPC", "EFBIG") and int(megabytes) <= 8


async def test_file_size_limit_in_workspace(sandbox: SandboxRunEnvironment) -> None:
    code = (
        "try:\n    open('big', 'wb').write(b'x' * (20 << 20))\n"
        "except OSError as e: print('refused', e.errno)"
    )
    result = await sandbox.execute(code, limits=Limits(disk=4 << 20))
    assert result.stdout == "refused 27\n"  # EFBIG


async def test_open_files_limit(sandbox: SandboxRunEnvironment) -> None:
    code = (
        "files = []\ntry:\n    while True: files.append(open('/dev/null'))\n"
        "except OSError as e: print(len(files) < 64, e.errno)"
    )
    result = await sandbox.execute(code, limits=Limits(open_files=64))
    assert result.stdout == "True 24\n"  # EMFILE


async def test_execution_limits_override_environment_defaults(shared_tmp: Path) -> None:
    async with SandboxRunEnvironment(tmp_dir=str(shared_tmp), limits=Limits(open_files=50)) as env:
        code = "import resource; print(resource.getrlimit(resource.RLIMIT_NOFILE))"
        assert (await env.execute(code)).stdout == "(50, 50)\n"
        assert (await env.execute(code, limits=Limits(open_files=70))).stdout == "(70, 70)\n"


async def test_rlimit_fallback_without_cgroups(shared_tmp: Path) -> None:
    async with SandboxRunEnvironment(tmp_dir=str(shared_tmp), cgroups=False) as env:
        status = await env.status()
        assert any("RLIMIT_DATA" in note for note in status.notes)
        code = "try:\n    x = bytearray(200 << 20)\nexcept MemoryError:\n    print('refused')"
        result = await env.execute(code, limits=Limits(memory=64 << 20))
        assert result.stdout == "refused\n"


# -- readiness, options -------------------------------------------------------------------
async def test_not_ready_without_bubblewrap(
    shared_tmp: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(shared_tmp))  # a PATH with no bwrap on it
    async with SandboxRunEnvironment(tmp_dir=str(shared_tmp)) as env:
        assert not await env.is_ready()
        status = await env.status()
        assert status.reason == "bubblewrap is not installed (apt-get install bubblewrap)"
        with pytest.raises(EnvironmentUnavailableError, match="bubblewrap is not installed"):
            await env.execute("print(1)")


async def test_not_ready_with_a_bubblewrap_that_is_not_a_program(shared_tmp: Path) -> None:
    missing = shared_tmp / "no-such-bwrap"
    async with SandboxRunEnvironment(tmp_dir=str(shared_tmp), bwrap=str(missing)) as env:
        status = await env.status()
        assert not status.ready
        assert status.reason == f"bubblewrap {str(missing)!r} is not an executable file"


async def test_not_ready_when_bubblewrap_fails(shared_tmp: Path) -> None:
    broken = shared_tmp / "bwrap"
    broken.write_text(
        "#!/bin/sh\necho 'bwrap: No permissions to create new namespace' >&2\nexit 1\n"
    )
    broken.chmod(0o755)
    async with SandboxRunEnvironment(tmp_dir=str(shared_tmp), bwrap=str(broken)) as env:
        assert not await env.is_ready()
        status = await env.status()
        assert status.reason is not None and "No permissions" in status.reason
        with pytest.raises(EnvironmentUnavailableError, match="No permissions"):
            await env.execute("print(1)")
    broken.unlink()


def test_unreachable_tmp_dir_is_refused(tmp_path: Path) -> None:
    closed = tmp_path / "closed"
    closed.mkdir(mode=0o700)
    if os.geteuid() != 0:
        pytest.skip("only root runs the sandbox as another uid")
    with pytest.raises(InvalidOptionsError, match="reachable by the sandbox"):
        SandboxRunEnvironment(tmp_dir=str(closed))


async def test_cwd_outside_the_workspace_is_refused(sandbox: SandboxRunEnvironment) -> None:
    with pytest.raises(InvalidOptionsError, match="cwd must be inside"):
        await sandbox.execute("pass", cwd="/usr")
    result = await sandbox.execute("import os; print(os.getcwd())", cwd="/workspace/a")
    assert result.stdout == "/workspace/a\n"


async def test_clean_environment(sandbox: SandboxRunEnvironment) -> None:
    os.environ["RUNENV_TEST_SECRET"] = "s3cret"
    try:
        code = "import os, json; print(json.dumps(dict(os.environ)))"
        result = await sandbox.execute(code, env={"MINE": "1"})
    finally:
        del os.environ["RUNENV_TEST_SECRET"]
    assert set(json.loads(result.stdout)) == {"PATH", "HOME", "LANG", "TMPDIR", "NODE_PATH",
                                              "PWD", "MINE"}  # fmt: skip


async def test_network_option_reaches_the_host(shared_tmp: Path) -> None:
    async def serve(stream: anyio.abc.SocketStream) -> None:
        async with stream:
            await stream.send(b"hello from the host")

    listener = await anyio.create_tcp_listener(local_host="127.0.0.1")
    port = listener.extra(anyio.abc.SocketAttribute.local_port)
    code = (
        "import socket\ns = socket.create_connection(('127.0.0.1', int(__import__('sys').argv[1])),"
        " timeout=5)\nprint(s.recv(100).decode())"
    )
    async with listener, anyio.create_task_group() as tg:
        tg.start_soon(listener.serve, serve)
        async with SandboxRunEnvironment(tmp_dir=str(shared_tmp), network=True) as env:
            result = await env.execute(code, args=[str(port)], timeout=20)
        async with SandboxRunEnvironment(tmp_dir=str(shared_tmp)) as env:
            closed = await env.execute(code, args=[str(port)], timeout=20)
        tg.cancel_scope.cancel()
    assert result.stdout == "hello from the host\n", result
    assert not closed.success and "Connection refused" in closed.stderr  # its own loopback


async def test_sixty_four_concurrent_runs_see_only_their_own_files(
    sandbox: SandboxRunEnvironment,
) -> None:
    code = (
        "import os, sys\nmine = open('secret.txt').read()\n"
        "open('/tmp/mark', 'w').write(mine)\n"
        "print(sys.argv[1], mine, sorted(os.listdir('.')), sorted(os.listdir('/tmp')))"
    )
    results: dict[int, str] = {}

    async def one(i: int) -> None:
        result = await sandbox.execute(code, args=[str(i)], files={"secret.txt": f"s{i}"})
        results[i] = result.stdout

    async with anyio.create_task_group() as tg:
        for i in range(64):
            tg.start_soon(one, i)
    assert results == {i: f"{i} s{i} ['main.py', 'secret.txt'] ['mark']\n" for i in range(64)}


# -- cgroup v2 ----------------------------------------------------------------------------
def test_cgroup_v2_lifecycle() -> None:
    """The v2 code path on the unified hierarchy, whatever controllers this machine gives it."""
    unified = cgroup_support.unified_hierarchy()
    if unified is None or not os.access(unified, os.W_OK):
        pytest.skip("this machine has no writable cgroup v2 hierarchy")
    controllers = frozenset((unified / "cgroup.subtree_control").read_text().split())
    manager = cgroup_support.Cgroups(2, [unified], controllers)
    group = manager.create(f"{cgroup_support.PREFIX}v2test-{os.getpid()}", Limits(memory=64 << 20))
    sleeper = subprocess.Popen(
        ["sh", "-c", "i=0; while [ $i -lt 200000 ]; do i=$((i+1)); done; sleep 60"]
    )
    try:
        group.attach(sleeper.pid)
        assert str(sleeper.pid) in (group.directories[0] / "cgroup.procs").read_text()
        group.kill()
        assert sleeper.wait(timeout=10) == -signal.SIGKILL
        usage = group.usage()
        assert usage.cpu_time is not None and usage.cpu_time > 0
        for _ in range(100):
            if group.remove():
                break
            time.sleep(0.01)
        assert not group.directories[0].exists()
    finally:
        sleeper.kill()
        sleeper.wait()
        group.remove()


async def test_a_held_sandbox_that_died_is_replaced_and_released(
    sandbox: SandboxRunEnvironment,
) -> None:
    # Bash: Python goes to the fork servers of warm runs, not to sandboxes started ahead.
    assert (await sandbox.execute("echo 1", language="bash")).stdout == "1\n"
    assert await sandbox.settle()  # the next run's sandbox is set up
    (held,) = sandbox.held()
    assert held.pid is not None
    os.kill(held.pid, signal.SIGKILL)
    with anyio.fail_after(10):  # dead: a zombie until its parent (we) reaps it
        while Path(f"/proc/{held.pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z":
            await anyio.sleep(0.01)
    assert (await sandbox.execute("echo 2", language="bash")).stdout == "2\n"
    with anyio.fail_after(10):  # reaped by us, not left as a zombie
        while os.path.exists(f"/proc/{held.pid}"):
            await anyio.sleep(0.01)
    assert await sandbox.settle()
    (replacement,) = sandbox.held()  # a new one waits for run 3
    assert replacement.slot != held.slot and replacement.pid not in (None, held.pid)


@pytest.mark.parametrize("cgroups", [True, False])
async def test_files_in_tmp_and_mnt(shared_tmp: Path, cgroups: bool) -> None:
    """Absolute paths below /tmp and /mnt (as SandboxFusion's clients send them): written
    before the run as its identity, fetched after it, gone with it; a link the program
    planted there is not followed."""
    code = (
        "import os\nprint(open('/tmp/in.txt').read(), open('/mnt/data/t.csv').read())\n"
        "open('/tmp/out.txt', 'w').write('out')\nos.symlink('/etc/passwd', '/mnt/data/leak')"
    )
    async with SandboxRunEnvironment(tmp_dir=str(shared_tmp), cgroups=cgroups) as env:
        result = await env.execute(
            code,
            files={"/tmp/in.txt": "in", "/mnt/data/t.csv": "a,b"},
            fetch_files=["/tmp/out.txt", "/mnt/data/leak", "/tmp/in.txt"],
        )
        assert result.stdout == "in a,b\n", result
        assert result.files == {"/tmp/out.txt": b"out", "/tmp/in.txt": b"in"}
        assert result.missing_files == ("/mnt/data/leak",)
        again = await env.execute("import os; print(os.listdir('/tmp'))")
        assert again.stdout == "[]\n"  # the next run's /tmp is its own
        with pytest.raises(InvalidOptionsError, match="below /tmp or /mnt"):
            await env.execute("1", files={"/etc/cron.d/x": "x"})
        assert await sandbox_leftovers(env, shared_tmp) == []


async def test_the_local_environment_takes_only_relative_files(tmp_path: Path) -> None:
    async with LocalRunEnvironment(tmp_dir=str(tmp_path)) as env:
        with pytest.raises(
            InvalidOptionsError, match=r"must be relative \(in the workspace\) here"
        ):
            await env.execute("1", files={"/tmp/x": "x"})
        assert list(tmp_path.iterdir()) == []


DATASET_PROGRAMS = {
    "python": (
        "import numpy, pandas, scipy.optimize, sklearn.linear_model, sympy, networkx\n"
        "import matplotlib\nmatplotlib.use('Agg')\nimport matplotlib.pyplot as plt\n"
        "plt.plot([1, 2]); plt.savefig('plot.png')\n"
        "frame = pandas.DataFrame({'x': numpy.arange(3)})\n"
        "print(int(frame.x.sum()), sympy.factor('x**2 - 1'), networkx.path_graph(3).size())"
    ),
    "java": (
        "import org.javatuples.Pair;\npublic class Main { public static void main(String[] a)"
        ' { System.out.println(Pair.with(3, "x (x - 1)*(x + 1) 2").getValue0()); } }'
    ),
    "perl": (
        "use Test::Deep qw(eq_deeply); use Data::Compare;\n"
        'print eq_deeply([1, {a => 2}], [1, {a => 2}]) && Compare(1, 1) ? 3 : 0, "\\n";'
    ),
    "javascript": "console.log(require('lodash').sum([1, 2]))",
    "lua": "local lu = require('luaunit')\nprint(lu.LuaUnit ~= nil and 3 or 0)",
    "cpp": (
        "#include <boost/algorithm/string.hpp>\n#include <iostream>\n"
        'int main() { std::string s = "3"; boost::algorithm::trim(s); std::cout << s << "\\n"; }'
    ),
}


@pytest.mark.parametrize("language", sorted(DATASET_PROGRAMS))
async def test_the_datasets_profile_is_there(sandbox: SandboxRunEnvironment, language: str) -> None:
    """The libraries reference solutions of evaluation datasets import (scripts/setup
    installs them; the sandbox shows them read-only)."""
    result = await sandbox.execute(
        DATASET_PROGRAMS[language], language=language, timeout=60, compile_timeout=120
    )
    assert result.success, result
    assert result.stdout.split()[0] == "3"
