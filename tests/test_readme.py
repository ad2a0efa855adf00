"""The README cannot drift: every Python snippet runs as a script, every ``runenv run``,
``languages`` and ``doctor`` line of the command-line block runs, the ``runenv serve`` lines
parse, and the TOML is valid. Snippets that name the default server address
(http://127.0.0.1:8000) talk to a ``runenv serve`` started here instead."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.server.hostile import serve_process

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
BLOCKS = re.findall(r"```(\w+)\n(.*?)```", README, re.S)
DEFAULT_URL = "http://127.0.0.1:8000"
BIN = str(Path(sys.executable).parent)


def blocks(kind: str) -> list[str]:
    return [text for language, text in BLOCKS if language == kind]


def test_the_readme_has_the_snippets_this_module_runs() -> None:
    assert len(blocks("python")) >= 7
    assert any("runenv run" in text for text in blocks("sh"))
    assert any("runenv serve" in text for text in blocks("sh"))


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    tmp = Path(tempfile.mkdtemp(prefix="runenv-readme-", dir="/dev/shm"))
    tmp.chmod(0o755)
    (tmp / "workspaces").mkdir(mode=0o755)
    try:
        with serve_process(tmp / "workspaces") as (url, _):
            yield url
    finally:
        shutil.rmtree(tmp)


@pytest.mark.parametrize("index", range(len(blocks("python"))))
def test_python_snippet_runs(index: int, server: str, tmp_path: Path) -> None:
    script = tmp_path / "snippet.py"
    script.write_text(blocks("python")[index].replace(DEFAULT_URL, server))
    env = {**os.environ, "RUNENV_URL": server, "E2B_DEBUG": "true", "E2B_SANDBOX_URL": server,
           "PATH": f"{BIN}:{os.environ['PATH']}"}  # fmt: skip
    env.pop("E2B_API_KEY", None)
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                          timeout=300, cwd=tmp_path, env=env, check=False)  # fmt: skip
    assert done.returncode == 0, f"{script.read_text()}\n{done.stdout}\n{done.stderr}"
    assert "Traceback" not in done.stderr


def command_lines() -> list[str]:
    lines = []
    for text in blocks("sh"):
        for line in text.splitlines():
            command = line.split("  #", 1)[0].strip()
            if re.search(r"(^|\| )runenv (run|languages|doctor)", command):
                lines.append(command)
    return lines


def a_project(where: Path) -> None:
    """The files the command-line examples name."""
    (where / "script.py").write_text("import sys\nprint('script', sys.argv[1:])\n")
    (where / "app.py").write_text("import helper\nprint(helper.X)\n")
    (where / "helper.py").write_text("X = 'neighbour'\n")
    (where / "main.py").write_text("print(open('data.csv').read().strip())\n")
    (where / "data.csv").write_text("a,b\n")
    (where / "lib").mkdir()
    (where / "lib" / "util.py").write_text("")
    (where / "tool.py").write_text("import sys\nprint(sys.argv[1:])\n")
    (where / "vars.env").write_text("FROM_FILE=1\n")
    (where / "solve.cpp").write_text('#include <cstdio>\nint main(){std::puts("solved");}\n')


@pytest.mark.parametrize("line", command_lines())
def test_command_line_example_runs(line: str, tmp_path: Path) -> None:
    a_project(tmp_path)
    env = {**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}", "E2B_API_KEY": ""}
    done = subprocess.run(["bash", "-c", line], capture_output=True, text=True, timeout=300,
                          cwd=tmp_path, env=env, stdin=subprocess.DEVNULL, check=False)  # fmt: skip
    assert done.returncode == 0, f"{line}\n{done.stdout}\n{done.stderr}"


def serve_lines() -> list[str]:
    return [line.split("  #", 1)[0].strip() for text in blocks("sh")
            for line in text.splitlines() if line.startswith("runenv serve")]  # fmt: skip


@pytest.mark.parametrize("line", serve_lines())
def test_serve_example_parses(line: str) -> None:
    env = {**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}", "TOKEN": "t"}
    done = subprocess.run(["bash", "-c", f"{line} --help"], capture_output=True, text=True,
                          timeout=60, env=env, check=False)  # fmt: skip
    assert done.returncode == 0, done.stderr


def test_toml_snippets_are_valid() -> None:
    for text in blocks("toml"):
        tomllib.loads(text)
