"""``runenv run`` with real programs, as a person used to ``python`` or ``docker run`` uses
it: through the real executable, in a pseudo-terminal where terminal behaviour matters."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import pty
import re
import select
import signal
import socket
import subprocess
import termios
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.cli.test_cli import RUNENV, runenv


@pytest.fixture
def workspaces(shared_tmp: Path) -> Path:
    """A private parent for the run's workspaces (reachable by the sandbox's uids)."""
    return shared_tmp


def in_(workspaces: Path) -> dict[str, str]:
    return {**os.environ, "RUNENV_TMPDIR": str(workspaces)}


# -- standard input -------------------------------------------------------------------------
def test_piped_standard_input_goes_to_the_program() -> None:
    done = runenv("run", "-c", "print(input().upper())", input="hi\n")
    assert (done.returncode, done.stdout) == (0, "HI\n")


def test_piped_binary_input_arrives_unchanged() -> None:
    data = bytes(range(256)) * 4
    code = "import sys; d = sys.stdin.buffer.read(); print(len(d), d == bytes(range(256)) * 4)"
    done = subprocess.run([RUNENV, "run", "-c", code], input=data, capture_output=True,
                          timeout=120, check=False)  # fmt: skip
    assert done.stdout == b"1024 True\n"


def test_no_stdin_keeps_ours_to_ourselves() -> None:
    done = runenv("run", "--no-stdin", "-c", "import sys; print(repr(sys.stdin.read()))", input="x")
    assert done.stdout == "''\n"


# -- the program's files --------------------------------------------------------------------
def test_the_file_keeps_its_name(tmp_path: Path) -> None:
    script = tmp_path / "tool.py"
    script.write_text("import sys\nprint(sys.argv[0])\nraise SystemExit(1 / 0)\n")
    done = runenv("run", str(script))
    assert done.stdout == "/workspace/tool.py\n"
    assert 'File "/workspace/tool.py", line 3' in done.stderr


def test_a_directory_goes_with_its_tree(tmp_path: Path) -> None:
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "__init__.py").write_text("")
    (tmp_path / "pkg" / "helper.py").write_text("X = 5\n")
    (tmp_path / "in.txt").write_text("data\n")
    (tmp_path / ".git").mkdir()
    (tmp_path / ".git" / "HEAD").write_text("ref")
    (tmp_path / "app.py").write_text(
        "import os\nfrom pkg.helper import X\nprint(X, open('in.txt').read().strip(), "
        "os.path.exists('.git'))\n"
    )
    done = runenv("run", "--dir", str(tmp_path), str(tmp_path / "app.py"))
    assert (done.returncode, done.stdout) == (0, "5 data False\n")
    alone = runenv("run", str(tmp_path / "app.py"))  # without --dir: only the file
    assert alone.returncode == 1 and "ModuleNotFoundError" in alone.stderr


def test_chosen_files_and_directories_go_under_their_names(tmp_path: Path) -> None:
    (tmp_path / "data.csv").write_text("a,b\n")
    (tmp_path / "lib").mkdir()
    (tmp_path / "lib" / "util.sh").write_text("echo util\n")
    code = "cat table.csv; . lib/util.sh; cat data.csv 2>/dev/null || echo no-original-name"
    done = runenv(
        "run", "-l", "bash", "-f", f"{tmp_path / 'data.csv'}:table.csv",
        "-f", str(tmp_path / "lib"), "-c", code,
    )  # fmt: skip
    assert done.stdout == "a,b\nutil\nno-original-name\n"


def test_a_java_file_compiles_under_its_class_name(tmp_path: Path) -> None:
    source = tmp_path / "Hello.java"
    source.write_text(
        "public class Hello { public static void main(String[] a) "
        '{ System.out.println("hi " + a[0]); } }'
    )
    done = runenv("run", str(source), "there")
    assert (done.returncode, done.stdout) == (0, "hi there\n"), done.stderr


def test_special_files_are_never_read(tmp_path: Path) -> None:
    fifo = tmp_path / "pipe.py"
    os.mkfifo(fifo)
    done = runenv("run", str(fifo))
    assert done.returncode == 2
    assert done.stderr.strip() == f"runenv: {fifo} is not a regular file"


# -- options a person reaches for -----------------------------------------------------------
def test_environment_variables_as_docker_takes_them(tmp_path: Path) -> None:
    listed = tmp_path / "vars.env"
    listed.write_text("# comment\nFROM_FILE=file\nBOTH=file\n")
    code = "import os; print([os.environ.get(k) for k in ('A', 'HERE', 'FROM_FILE', 'BOTH')])"
    done = runenv(
        "run", "-e", "A=1", "-e", "HERE", "--env-file", str(listed), "-e", "BOTH=flag",
        "-c", code, env={**os.environ, "HERE": "ours"},
    )  # fmt: skip
    assert done.stdout == "['1', 'ours', 'file', 'flag']\n"


def test_an_environment_name_after_e_says_to_use_capital_e() -> None:
    done = runenv("run", "-e", "local", "-c", "print(1)")
    assert done.returncode == 2
    assert "use -E local" in done.stderr


def test_limits_memory_processes_cpu_and_output() -> None:
    memory = runenv("run", "-m", "64m", "-c", "x = bytearray(256 << 20); print('allocated')")
    assert memory.returncode != 0 and "allocated" not in memory.stdout
    assert "memory" in memory.stderr.lower()
    forks = runenv("run", "--pids-limit", "4", "-l", "bash", "-c",
                   "for i in $(seq 20); do sleep 5 & done; wait")  # fmt: skip
    assert forks.returncode != 0
    assert "fork" in forks.stderr.lower() or "resource" in forks.stderr.lower()
    spin = runenv("run", "--cpu-time", "1", "-t", "20", "-c", "while True: pass")
    assert spin.returncode == 128 + signal.SIGXCPU and "CPU time" in spin.stderr
    loud = runenv("run", "--output-limit", "10k", "-c", "print('x' * 100_000)")
    assert len(loud.stdout) == 10 << 10 and "output limit" in loud.stderr


def test_network_none_and_host() -> None:
    with socket.create_server(("127.0.0.1", 0)) as listener:
        port = listener.getsockname()[1]
        code = f"import socket; socket.create_connection(('127.0.0.1', {port}), 5); print('in')"
        closed = runenv("run", "--network", "none", "-c", code)
        assert closed.returncode != 0 and "ConnectionRefusedError" in closed.stderr
        opened = runenv("run", "--network", "host", "-c", code)
        assert opened.stdout == "in\n", opened.stderr


def test_workdir_and_compile_timeout() -> None:
    done = runenv("run", "-w", "sub/dir", "-c", "import os; print(os.getcwd())")
    assert done.stdout == "/workspace/sub/dir\n"
    slow = runenv("run", "-l", "c", "--compile-timeout", "0.01", "-c", "int main(){return 0;}")
    assert slow.returncode != 0 and "timed out" in slow.stderr


# -- mistakes -------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("args", "said"),
    [
        (["run", "-c", "print(1)", "--jsn"], "No such option '--jsn'"),
        (["run", "missing.py"], "runenv: cannot read missing.py: No such file or directory"),
        (["run", "-l", "pyton", "-c", "1"], "unknown language 'pyton'"),
        (["run", "-m", "lots", "-c", "1"], "'lots' is not a size"),
        (["run", "-m", "2000000g", "-c", "1"], "limits.memory must be at most"),
        (["run", "--disk", "1e400", "-c", "1"], "'1e400' is not a size"),
        (["run", "-E", "mars", "-c", "1"], "unknown environment 'mars'"),
        (["run", "-e", "=x", "-c", "1"], "not a variable"),
    ],
)
def test_mistakes_are_one_line_and_status_2(args: list[str], said: str) -> None:
    done = runenv(*args)
    assert done.returncode == 2, done.stderr
    assert said in done.stderr
    assert "Traceback" not in done.stderr and done.stdout == ""


def test_a_file_and_code_together_are_an_error(tmp_path: Path) -> None:
    script = tmp_path / "script.py"
    script.write_text("print('file')")
    done = runenv("run", str(script), "-c", "print('code')")
    assert done.returncode == 2 and "not both" in done.stderr
    argument = runenv("run", "-c", "import sys; print(sys.argv[1:])", str(script))
    assert argument.stdout == f"[{str(script)!r}]\n"  # after -c, a positional is an argument


def test_program_arguments_with_dashes_follow_a_double_dash(tmp_path: Path) -> None:
    script = tmp_path / "args.py"
    script.write_text("import sys; print(sys.argv[1:])")
    done = runenv("run", str(script), "a", "--", "--verbose", "-x")
    assert done.stdout == "['a', '--verbose', '-x']\n"


def test_errors_are_json_with_json() -> None:
    done = runenv("run", "--json", "missing.py")
    assert done.returncode == 2
    assert json.loads(done.stdout) == {
        "error": {"type": "usage", "message": "cannot read missing.py: No such file or directory"}
    }
    unknown = runenv("run", "--json", "-l", "cobol", "-c", "1")
    assert json.loads(unknown.stdout)["error"]["type"] == "invalid"


# -- output ---------------------------------------------------------------------------------
def test_binary_output_passes_through_unchanged() -> None:
    code = (
        "import sys; sys.stdout.buffer.write(bytes(range(256))); sys.stderr.buffer.write(b'\\xff')"
    )
    done = subprocess.run([RUNENV, "run", "-c", code], capture_output=True, timeout=120,
                          stdin=subprocess.DEVNULL, check=False)  # fmt: skip
    assert done.stdout == bytes(range(256))
    assert done.stderr.startswith(b"\xff")


@pytest.mark.parametrize(
    ("name", "text", "expected"),
    [
        ("a.cc", "#include <cstdio>\nint main(){std::puts(\"cpp\");}", "cpp\n"),
        ("a.cxx", "#include <cstdio>\nint main(){std::puts(\"cxx\");}", "cxx\n"),
        ("a.bash", "echo ${BASH_VERSION:+bash}", "bash\n"),
        ("a.mjs", "import { argv } from 'node:process'; console.log('esm', argv.length)",
         "esm 2\n"),
        ("a.pyw", "print('pyw')", "pyw\n"),
        ("tool", "#!/usr/bin/env python3\nprint('shebang')", "shebang\n"),
        ("run-me", "#!/bin/sh\necho sh", "sh\n"),
    ],
)  # fmt: skip
def test_suffixes_and_shebangs_choose_the_language(
    tmp_path: Path, name: str, text: str, expected: str
) -> None:
    (tmp_path / name).write_text(text)
    done = runenv("run", str(tmp_path / name))
    assert (done.returncode, done.stdout) == (0, expected), done.stderr


def test_an_unknown_suffix_is_named_as_such(tmp_path: Path) -> None:
    (tmp_path / "notes.xyz").write_text("x")
    done = runenv("run", str(tmp_path / "notes.xyz"))
    assert done.returncode == 2
    assert "unknown file suffix '.xyz'" in done.stderr and "unknown language" not in done.stderr


PLUGIN = '''
from run_environments import EnvironmentStatus, ExecutionResult, RunEnvironment

class Quiet(RunEnvironment):
    """Gives its output only in the result, and needs an extra to be ready."""
    name = "quiet"
    async def execute(self, code, options=None, **overrides):
        return ExecutionResult(success=True, exit_code=0, stdout="in the result\\n",
                               stderr="also\\n", environment=self.name)
    async def cleanup(self):
        pass
    async def is_ready(self):
        return True
    async def status(self):
        return EnvironmentStatus(name=self.name, ready=False,
                                 reason="pip install 'quiet-env[cloud]'")
'''


@pytest.fixture
def plugin(tmp_path: Path) -> dict[str, str]:
    """An environment of another package, found through the entry point."""
    (tmp_path / "quiet_env.py").write_text(PLUGIN)
    info = tmp_path / "quiet_env-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: quiet-env\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(
        "[run_environments.environments]\nquiet = quiet_env:Quiet\n"
    )
    return {**os.environ, "PYTHONPATH": str(tmp_path), "COLUMNS": "300"}


def test_output_only_in_the_result_is_printed(plugin: dict[str, str]) -> None:
    done = runenv("run", "-E", "quiet", "-c", "anything", env=plugin)
    assert (done.returncode, done.stdout) == (0, "in the result\n")
    assert done.stderr.startswith("also\n")


def test_doctor_keeps_brackets_in_hints(plugin: dict[str, str]) -> None:
    done = runenv("doctor", env=plugin)
    assert "✗ quiet: pip install 'quiet-env[cloud]'" in done.stdout


# -- doctor, languages ----------------------------------------------------------------------
def test_doctor_and_languages_as_json() -> None:
    env = {**os.environ, "E2B_API_KEY": "", "RUNENV_URL": ""}
    doctor = runenv("doctor", "--json", env=env)
    data = json.loads(doctor.stdout)
    assert doctor.returncode == 0 and data["default"] == "sandbox" and data["default_ready"]
    found = {e["name"]: e for e in data["environments"]}
    assert found["sandbox"]["ready"] and found["local"]["ready"]
    assert not found["remote"]["ready"]
    assert found["remote"]["reason"].startswith("not configured")
    profile = data["profiles"]["datasets"]
    assert profile["numpy"] and profile["javatuples"] and profile["boost"]  # versions
    assert len(profile) == 14
    python = next(lang for lang in found["sandbox"]["languages"] if lang["name"] == "python")
    assert python["available"] and python["command"]
    languages = json.loads(runenv("languages", "--json", env=env).stdout)
    cpp = {
        "name": "cpp",
        "aliases": ["c++", "cxx"],
        "suffixes": [".cpp", ".cc", ".cxx", ".c++", ".C"],
    }
    assert cpp in languages["languages"]


def test_without_bubblewrap_the_sandbox_runs_no_language(tmp_path: Path) -> None:
    env = {**os.environ, "PATH": str(tmp_path), "E2B_API_KEY": ""}
    data = json.loads(runenv("languages", "--json", env=env).stdout)
    sandbox = next(e for e in data["environments"] if e["name"] == "sandbox")
    assert not sandbox["ready"]
    assert not any(lang["available"] for lang in sandbox["languages"])
    doctor = runenv("doctor", env=env)
    assert doctor.returncode == 1 and "default environment (sandbox) is not ready" in doctor.stdout


# -- signals: the run stops, and nothing is left ----------------------------------------------
def leftovers(workspaces: Path, instance: str) -> list[str]:
    left = [str(p) for p in workspaces.iterdir()]
    for root in Path("/sys/fs/cgroup").iterdir():
        left += [str(p) for p in root.glob(f"*runenv*{instance}*")]
        left += [str(p) for p in root.glob(f"*/*runenv*{instance}*")]
    return left


def started_instance(workspaces: Path, timeout: float = 60) -> str:
    """The instance of the sandbox environment that made a directory in ``workspaces``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for entry in workspaces.iterdir():
            match = re.fullmatch(r"runenv-([0-9a-f]{12})", entry.name)
            if match and any(p.name.startswith(("ws-", "slot-")) for p in entry.iterdir()):
                return match.group(1)
        time.sleep(0.02)
    raise AssertionError("no run started")


@pytest.mark.parametrize(("signum", "status"), [(signal.SIGTERM, 143), (signal.SIGHUP, 129)])
def test_sigterm_and_sighup_stop_the_run_and_leave_nothing(
    workspaces: Path, signum: int, status: int
) -> None:
    code = "import time\nprint('running', flush=True)\ntime.sleep(60)"
    proc = subprocess.Popen([RUNENV, "run", "-c", code], env=in_(workspaces),
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)  # fmt: skip
    assert proc.stdout is not None and proc.stdout.readline() == "running\n"
    instance = started_instance(workspaces)
    proc.send_signal(signum)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == status
    assert f"stopped by {signal.Signals(signum).name}" in err
    assert leftovers(workspaces, instance) == []


@contextlib.contextmanager
def in_a_terminal(
    argv: list[str], env: dict[str, str]
) -> Iterator[tuple[subprocess.Popen[bytes], int]]:
    """``argv`` with a pseudo-terminal as its controlling terminal and standard streams."""
    master, slave = pty.openpty()

    def take_the_terminal() -> None:
        fcntl.ioctl(0, termios.TIOCSCTTY, 0)

    proc = subprocess.Popen(argv, stdin=slave, stdout=slave, stderr=slave, env=env,
                            start_new_session=True, preexec_fn=take_the_terminal)  # fmt: skip
    os.close(slave)
    try:
        yield proc, master
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=30)
        os.close(master)


def read_until(master: int, text: bytes, timeout: float = 60) -> bytes:
    seen = b""
    deadline = time.monotonic() + timeout
    while text not in seen:
        ready, _, _ = select.select([master], [], [], max(deadline - time.monotonic(), 0))
        if not ready:
            raise AssertionError(f"{text!r} never came; saw {seen!r}")
        try:
            seen += os.read(master, 4096)
        except OSError:  # the terminal closed
            raise AssertionError(f"{text!r} never came; saw {seen!r}") from None
    return seen


def test_ctrl_c_in_a_terminal_exits_130_and_leaves_nothing(workspaces: Path) -> None:
    code = "import time\nprint('running', flush=True)\ntime.sleep(60)"
    with in_a_terminal([RUNENV, "run", "-c", code], in_(workspaces)) as (proc, master):
        read_until(master, b"running")
        instance = started_instance(workspaces)
        os.write(master, b"\x03")  # the terminal sends SIGINT to its foreground group
        assert proc.wait(timeout=60) == 130
    assert leftovers(workspaces, instance) == []


def test_a_terminal_as_standard_input_is_not_read(workspaces: Path) -> None:
    code = "import sys\nprint('got', repr(sys.stdin.read()), flush=True)"
    with in_a_terminal([RUNENV, "run", "-c", code], in_(workspaces)) as (proc, master):
        read_until(master, b"got ''")
        assert proc.wait(timeout=60) == 0
