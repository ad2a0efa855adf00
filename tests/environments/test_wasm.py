"""The wasm environment: Pyodide and QuickJS from npm, in Node.js processes started by the
environment (the packages are installed by ``scripts/setup``, as for users)."""

from __future__ import annotations

import os
import pathlib
import socket
import threading
from collections.abc import AsyncIterator, Iterator
from typing import ClassVar

import anyio
import pytest

from run_environments import (
    LanguageUnavailableError,
    Limits,
    RunEnvironment,
)
from run_environments.environments.wasm import WasmRunEnvironment, install
from run_environments.testing import EnvironmentBehaviour

pytestmark = pytest.mark.anyio

NEEDS_A_SUBPROCESS = "bash: the wasm environment has no shell and no subprocess"


def runners() -> dict[int, str]:
    """This test process's children that are wasm runners: pid -> state."""
    found = {}
    for entry in pathlib.Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        if int(fields[1]) == os.getpid() and str(install.RUNNER).encode() in cmdline:
            found[int(entry.name)] = fields[0]
    return found


def wasm_leftovers(env: WasmRunEnvironment) -> list[str]:
    """Runners in use by no run, killed ones not reaped, and any this environment does
    not know of (the pool's waiting runners are its capacity, not leftovers)."""
    known = set(env.interpreters())
    left = [f"runner {pid} in use" for pid in env.busy()]
    for pid, state in runners().items():
        if state == "Z" or pid not in known:
            left.append(f"runner {pid} ({state})")
    return left


class TestWasm(EnvironmentBehaviour):
    languages = ("python", "javascript")
    refuses_other_languages = True
    unsupported: ClassVar[dict[str, str]] = {
        "test_dev_stdin_and_dev_stdout_open_as_files": NEEDS_A_SUBPROCESS,
        "test_aliases_resolve": NEEDS_A_SUBPROCESS,
        "test_options_object_and_overrides": NEEDS_A_SUBPROCESS,
        "test_killed_by_signal": NEEDS_A_SUBPROCESS,
        "test_grandchild_holding_pipes_does_not_hang": NEEDS_A_SUBPROCESS,
    }

    @pytest.fixture
    async def env(self) -> AsyncIterator[WasmRunEnvironment]:
        async with WasmRunEnvironment() as env:
            yield env
        assert runners() == {}

    async def leftovers(self, env: RunEnvironment) -> list[str]:
        assert isinstance(env, WasmRunEnvironment)
        return wasm_leftovers(env)


@pytest.fixture
async def wasm() -> AsyncIterator[WasmRunEnvironment]:
    async with WasmRunEnvironment() as env:
        yield env
    assert runners() == {}


# -- isolation ------------------------------------------------------------------------------
async def test_no_host_file_is_readable_from_python(wasm: WasmRunEnvironment) -> None:
    code = (
        "import os\n"
        "for path in ('/etc/passwd', '/etc/hostname', '/proc/self/environ', __file__ + '/..'):\n"
        "    try:\n        open(path).read(); print('READ', path)\n"
        "    except OSError as exc:\n        print(type(exc).__name__)\n"
        "print(sorted(os.listdir('/')))"
    )
    result = await wasm.execute(code)
    assert "READ" not in result.stdout, result
    assert result.stdout.count("Error") == 4, result
    assert "etc" not in result.stdout.splitlines()[-1], result  # no host tree at all


async def test_no_host_file_is_readable_from_javascript(wasm: WasmRunEnvironment) -> None:
    code = (
        "const fs = require('fs');\n"
        "for (const p of ['/etc/passwd', '/proc/self/environ']) {\n"
        "  try { fs.readFileSync(p); console.log('READ', p); } catch (e) { console.log(e.code); }\n"
        "}\n"
        "console.log(typeof globalThis.require('fs').readFileSync, typeof std, typeof os);"
    )
    result = await wasm.execute(code, language="javascript")
    assert result.stdout == "ENOENT\nENOENT\nfunction undefined undefined\n", result


@pytest.mark.parametrize(
    "escape",
    [
        "import js; print(js.constructor.constructor('return process')())",
        "import js; print(js.process.pid)",
        "import pyodide_js; print(pyodide_js._module.FS.mount)",
        "from pyodide.code import run_js; print(run_js('process.pid'))",
        "import pyodide.http; print(pyodide.http.open_url('http://127.0.0.1:1/').read())",
    ],
)
async def test_python_reaches_no_javascript_host(wasm: WasmRunEnvironment, escape: str) -> None:
    """From Python, JavaScript is the way out of WebAssembly: the guest's ``js`` module is
    an empty object, Pyodide's API module is gone, and Node makes no code from strings."""
    result = await wasm.execute(escape)
    assert not result.success, result
    assert "Error" in result.stderr, result
    assert result.stdout == "", result


class Listener:
    """A TCP server on 127.0.0.1 that counts the connections it accepts."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen()
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.accepted = 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while not self.stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            self.accepted += 1
            conn.close()

    def close(self) -> None:
        self.stop.set()
        self.thread.join()
        self.sock.close()


@pytest.fixture
def listener() -> Iterator[Listener]:
    server = Listener()
    yield server
    server.close()


async def test_no_socket_can_be_opened(wasm: WasmRunEnvironment, listener: Listener) -> None:
    """Pyodide's socket module goes through Emscripten's WebSocket emulation: in Node that
    is the ``ws`` package, which the runner may not read: the connection fails at once.
    (With ``ws`` readable, ``connect`` returns and the socket would open once the runner's
    event loop ran, which it does not while it serves: a second line of defence.)"""
    code = (
        "import socket, time\ns = socket.socket()\n"
        f"try:\n    s.connect(('127.0.0.1', {listener.port})); s.send(b'x' * 10)\n"
        "except OSError as exc:\n    print('refused', type(exc).__name__)\ntime.sleep(1)"
    )
    result = await wasm.execute(code)
    js = f"fetch('http://127.0.0.1:{listener.port}/').then(() => console.log('connected'))"
    js_result = await wasm.execute(js, language="javascript")
    await anyio.sleep(0.5)
    assert result.stdout == "refused OSError\n", result  # not a connection made later
    assert listener.accepted == 0, (result, js_result)
    assert "ReferenceError" in js_result.stderr, js_result  # QuickJS has no fetch at all


async def test_no_subprocess_and_no_thread(wasm: WasmRunEnvironment) -> None:
    code = (
        "import subprocess, threading\n"
        "try:\n    subprocess.run(['id'])\nexcept OSError as exc:\n    print(exc)\n"
        "try:\n    threading.Thread(target=print).start()\n"
        "except RuntimeError as exc:\n    print(exc)"
    )
    result = await wasm.execute(code)
    assert "does not support processes" in result.stdout, result
    assert "can't start new thread" in result.stdout, result


# -- limits ---------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("language", "code"),
    [("python", "print('spinning', flush=True)\nwhile True: pass"),
     ("javascript", "console.log('spinning'); for (;;) {}")],
)  # fmt: skip
async def test_a_busy_loop_is_killed_at_the_timeout_and_the_next_run_is_served(
    wasm: WasmRunEnvironment, language: str, code: str
) -> None:
    result = await wasm.execute(code, language=language, timeout=1)
    assert result.timed_out, result
    assert result.stdout == "spinning\n"
    assert result.signal == "SIGKILL"
    assert wasm_leftovers(wasm) == []
    after = await wasm.execute("print('next')" if language == "python" else "console.log('next')",
                               language=language)  # fmt: skip
    assert after.stdout == "next\n", after


@pytest.mark.parametrize(
    ("language", "code"),
    [
        ("python", "print('start', flush=True)\nx = []\nwhile True: x.append(bytearray(1 << 20))"),
        (
            "javascript",
            "console.log('start'); const x = []; for (;;) x.push(new Array(1e5).fill(1))",
        ),
    ],
)
async def test_a_memory_bomb_is_oom_killed(
    wasm: WasmRunEnvironment, language: str, code: str
) -> None:
    result = await wasm.execute(code, language=language, limits=Limits(memory=128 << 20))
    assert result.oom_killed, result
    assert not result.success
    assert result.error == "killed: out of memory"
    assert result.stdout == "start\n"
    assert wasm_leftovers(wasm) == []
    again = await wasm.execute("print(sum(range(10)))", limits=Limits(memory=128 << 20))
    assert again.stdout == "45\n", again


async def test_memory_peak_is_the_guest_memory(wasm: WasmRunEnvironment) -> None:
    small = await wasm.execute("pass")
    large = await wasm.execute("x = bytearray(200 << 20)")
    assert small.memory_peak is not None and large.memory_peak is not None
    assert large.memory_peak - small.memory_peak >= 150 << 20, (small, large)


async def test_cpu_time_limit_stops_a_spinning_guest(wasm: WasmRunEnvironment) -> None:
    result = await wasm.execute("while True: pass", limits=Limits(cpu_time=1), timeout=30)
    assert result.signal == "SIGXCPU", result
    assert not result.timed_out
    assert result.error == "exceeded its CPU time limit (SIGXCPU)"


# -- fresh state ----------------------------------------------------------------------------
LEAVE = """\
import builtins, os, sys, json
builtins.LEFT = 'builtins'
json.dumps = lambda *a, **k: 'patched'
os.environ['LEFT'] = 'environ'
sys.modules['left_module'] = type(sys)('left_module')
sys.path.append('/left')
open('/tmp/left.txt', 'w').write('file')
open('/home/runenv/left.txt', 'w').write('file') if os.path.isdir('/home/runenv') else None
os.chdir('/')
global_left = 1
"""

LOOK = """\
import builtins, os, sys, json
print(hasattr(builtins, 'LEFT'), json.dumps(1), os.environ.get('LEFT'),
      'left_module' in sys.modules, '/left' in sys.path, os.path.exists('/tmp/left.txt'),
      os.path.exists('/home/runenv/left.txt'), 'global_left' in globals(), os.getcwd() == '/')
"""


async def test_nothing_a_run_leaves_is_seen_by_the_next(wasm: WasmRunEnvironment) -> None:
    for _ in range(4):  # past the pool's two waiting interpreters
        assert (await wasm.execute(LEAVE)).success
        result = await wasm.execute(LOOK)
        assert result.stdout == "False 1 None False False False False False False\n", result
    assert (await wasm.execute("globalThis.left = 1; Array.prototype.left = 2",
                               language="javascript")).success  # fmt: skip
    js = await wasm.execute("console.log(typeof left, [].left)", language="javascript")
    assert js.stdout == "undefined undefined\n", js


async def test_reuse_keeps_the_interpreter_and_recovers_from_a_kill() -> None:
    """Reuse is the opt-in for speed: what a run imports stays (its globals do not), the
    run's files go, and a killed interpreter is replaced."""
    async with WasmRunEnvironment(reuse=True, pool=1) as env:
        await env.execute("import json, sys\nsys.modules['kept'] = json\nx = 1",
                          files={"f.txt": "x"})  # fmt: skip
        second = await env.execute(
            "import sys, os\n"
            "print('kept' in sys.modules, 'x' in globals(), os.path.exists('../f.txt'))"
        )
        assert second.stdout == "True False False\n", second
        assert (await env.execute("while True: pass", timeout=0.5)).timed_out
        third = await env.execute("import sys\nprint('kept' in sys.modules)")
        assert third.stdout == "False\n", third  # a new interpreter after the kill
    assert runners() == {}


# -- the guest's view ---------------------------------------------------------------------
async def test_javascript_exit_codes_errors_and_files(wasm: WasmRunEnvironment) -> None:
    exit3 = await wasm.execute("console.log('a'); process.exit(3)", language="javascript")
    assert (exit3.exit_code, exit3.stdout) == (3, "a\n")
    thrown = await wasm.execute("function f() { throw new TypeError('bad') }\nf()",
                                language="javascript")  # fmt: skip
    assert thrown.exit_code == 1
    assert "TypeError: bad" in thrown.stderr
    code = (
        "const fs = require('fs'); fs.mkdirSync('out');\n"
        "fs.writeFileSync('out/r.txt', fs.readFileSync('in.txt', 'utf8').toUpperCase());"
    )
    files = await wasm.execute(code, language="javascript", files={"in.txt": "abc"},
                               fetch_files=["out/r.txt"])  # fmt: skip
    assert files.files == {"out/r.txt": b"ABC"}, files


async def test_javascript_readline_timers_and_promises(wasm: WasmRunEnvironment) -> None:
    code = (
        "const rl = require('readline').createInterface({ input: process.stdin });\n"
        "const lines = [];\nrl.on('line', (l) => lines.push(l));\n"
        "rl.on('close', () => setTimeout(() => Promise.resolve(lines.length)\n"
        "  .then((n) => console.log(n, lines.join('|'))), 10));"
    )
    result = await wasm.execute(code, language="javascript", stdin="a\nb\nc")
    assert result.stdout == "3 a|b|c\n", result


async def test_live_input_reaches_a_javascript_program(wasm: WasmRunEnvironment) -> None:
    code = (
        "const rl = require('readline').createInterface({ input: process.stdin });\n"
        "rl.on('line', (l) => console.log('got', l));"
    )
    result = await wasm.execute(code, language="javascript", stdin="one\ntwo\n")
    assert result.stdout == "got one\ngot two\n", result


# -- when it cannot run ---------------------------------------------------------------------
async def test_languages_it_does_not_serve_are_refused_precisely(wasm: WasmRunEnvironment) -> None:
    with pytest.raises(LanguageUnavailableError, match=r"python \(Pyodide\) and javascript"):
        await wasm.execute("echo hi", language="bash")


async def test_without_node_it_says_so(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")
    async with WasmRunEnvironment() as env:
        assert not await env.is_ready()
        with pytest.raises(LanguageUnavailableError, match="node not found"):
            await env.execute("print(1)")


async def test_without_its_packages_it_says_how_to_install_them(
    monkeypatch: pytest.MonkeyPatch, tmp_path: pathlib.Path
) -> None:
    monkeypatch.setenv("RUNENV_WASM_DIR", str(tmp_path))
    async with WasmRunEnvironment() as env:
        status = await env.status()
        assert not status.ready
        with pytest.raises(LanguageUnavailableError, match="wasm install"):
            await env.execute("print(1)")
