"""``runenv``, run as a real command."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

RUNENV = str(Path(sys.executable).with_name("runenv"))


def runenv(*args: str, **kwargs: object) -> subprocess.CompletedProcess[str]:
    if "input" not in kwargs:
        kwargs.setdefault("stdin", subprocess.DEVNULL)  # ours is not the program's, unless asked
    return subprocess.run(
        [RUNENV, *args], capture_output=True, text=True, timeout=120, check=False, **kwargs
    )  # type: ignore[call-overload, no-any-return]


def test_run_file_language_from_suffix(tmp_path: Path) -> None:
    script = tmp_path / "hello.rb"
    script.write_text('puts "ruby says #{ARGV.join(",")}"')
    done = runenv("run", str(script), "a", "b")
    assert (done.returncode, done.stdout) == (0, "ruby says a,b\n")


def test_run_code_with_language_args_and_stdin() -> None:
    done = runenv("run", "-l", "bash", "-c", 'read x; echo "$1 $x"', "--stdin", "typed", "--", "A")
    assert (done.returncode, done.stdout) == (0, "A typed\n")


def test_stdin_file(tmp_path: Path) -> None:
    data = tmp_path / "in.txt"
    data.write_text("from file\n")
    done = runenv("run", "-c", "print(input().upper())", "--stdin-file", str(data))
    assert done.stdout == "FROM FILE\n"


def test_exit_status_is_the_programs() -> None:
    done = runenv("run", "-c", "import sys; print('bye'); sys.exit(7)")
    assert (done.returncode, done.stdout) == (7, "bye\n")
    assert "exited with code 7" in done.stderr


def test_timeout_exits_124_with_partial_output() -> None:
    done = runenv("run", "-l", "sh", "-c", "echo early; sleep 30", "--timeout", "0.5")
    assert (done.returncode, done.stdout) == (124, "early\n")
    assert "timed out" in done.stderr


def test_signal_exit_status() -> None:
    done = runenv("run", "-l", "bash", "-c", "kill -TERM $$")
    assert done.returncode == 128 + 15


def test_json_output() -> None:
    done = runenv("run", "-c", "print('x')", "--json")
    data = json.loads(done.stdout)
    assert data["stdout"] == "x\n"
    assert data["success"] is True
    assert data["language"] == "python"
    assert done.returncode == 0


def test_sandbox_is_the_default_when_ready() -> None:
    done = runenv("run", "-c", "import os; print(os.getcwd())", "--verbose")
    assert done.stdout == "/workspace\n"
    assert "ran in the sandbox environment" in done.stderr


def test_environment_flag_chooses_local() -> None:
    done = runenv("run", "-E", "local", "-c", "import os; print(os.getcwd())", "--json")
    data = json.loads(done.stdout)
    assert data["environment"] == "local"
    assert data["stdout"] != "/workspace\n"


def test_compile_failure_is_shown_with_its_status() -> None:
    done = runenv("run", "-l", "c", "-c", "int main(void) { return nope; }")
    assert done.returncode == 1
    assert "nope" in done.stderr
    assert "compilation failed" in done.stderr


def test_output_streams_live(tmp_path: Path) -> None:
    """The first line arrives while the program still runs: it waits for our answer."""
    flag = tmp_path / "go"
    code = (
        "import os, sys, time\nprint('first', flush=True)\n"
        f"for _ in range(300):\n    if os.path.exists({str(flag)!r}): break\n"
        "    time.sleep(0.05)\nelse:\n    sys.exit(9)\nprint('second')"
    )
    command = [RUNENV, "run", "-E", "local", "-c", code]  # the flag is a host file
    with subprocess.Popen(
        command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, text=True
    ) as proc:
        assert proc.stdout is not None
        assert proc.stdout.readline() == "first\n"
        flag.write_text("")
        assert proc.stdout.read() == "second\n"
        assert proc.wait(timeout=60) == 0


def test_unknown_language_is_a_clear_error() -> None:
    done = runenv("run", "-l", "cobol", "-c", "x")
    assert done.returncode == 2
    assert "unknown language 'cobol'" in done.stderr
    assert "python" in done.stderr


def test_unknown_environment_is_a_clear_error() -> None:
    done = runenv("run", "-E", "mars", "-c", "print(1)")
    assert done.returncode == 2
    assert "unknown environment 'mars'" in done.stderr


def test_needs_file_or_code() -> None:
    done = runenv("run")
    assert done.returncode == 2
    assert "FILE or --code" in done.stderr


def test_languages_table() -> None:
    done = runenv("languages", env={**os.environ, "COLUMNS": "200", "E2B_API_KEY": ""})
    assert done.returncode == 0
    lines = [line for line in done.stdout.splitlines() if "│" in line or "┃" in line]
    header = [cell.strip() for cell in lines[0].split("┃")[1:-1]]
    assert header == ["language", "aliases", "local", "sandbox", "wasm"]
    rows = {cells[0]: cells for cells in
            ([c.strip() for c in line.split("│")[1:-1]] for line in lines[1:])}  # fmt: skip
    assert rows["python"][2:] == ["yes", "yes", "yes"]
    assert rows["ruby"][2:] == ["yes", "yes", "no"]  # wasm: Python and JavaScript only
    # docker is ready where a daemon answers at the default socket (not on these machines);
    # the others need a key, a host, a function or a server
    said = r"not ready here: cloud-functions, (docker, )?e2b, lambda, remote, ssh"
    assert re.search(said, done.stdout), done.stdout


def test_doctor_reports_ready_environments(tmp_path: Path) -> None:
    done = runenv("doctor")
    assert done.returncode == 0
    assert "✓ local" in done.stdout
    assert "✓ sandbox" in done.stdout
    assert "limits enforced with cgroup" in done.stdout


def test_doctor_says_what_to_install() -> None:
    bare = {**os.environ, "PATH": "/nonexistent"}
    done = subprocess.run(
        [sys.executable, "-m", "run_environments", "doctor"],
        capture_output=True,
        text=True,
        timeout=60,
        env=bare,
        check=False,
    )
    assert done.returncode == 1  # the default environment, the sandbox, is not ready
    assert "ruby: ruby not found; install ruby (apt-get install ruby)" in done.stdout
    assert "✗ sandbox: bubblewrap is not installed (apt-get install bubblewrap)" in done.stdout


@pytest.mark.parametrize("flag", ["--help", "--version"])
def test_help_and_version(flag: str) -> None:
    done = runenv(flag)
    assert done.returncode == 0
    assert done.stdout


def test_without_the_sandbox_nothing_runs_unisolated_unasked(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    code = f"open({str(marker)!r}, 'w').write('ran')"
    env = {**os.environ, "PATH": str(tmp_path)}  # no bubblewrap on it
    done = runenv("run", "-c", code, env=env)
    assert done.returncode == 125 and not marker.exists()
    assert "the sandbox is not ready here: bubblewrap is not installed" in done.stderr
    assert "-E local" in done.stderr
    asked = runenv("run", "-E", "local", "-c", code, env={**os.environ})
    assert asked.returncode == 0 and marker.read_text() == "ran"
