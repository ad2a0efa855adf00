"""The ssh environment from the command line and behind ``runenv serve``, configured by
``RUNENV_SSH_*`` variables, against the tests' sshd: real processes, and nothing of theirs
left on the "remote" afterwards."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.environments.test_ssh import remote_leftovers
from tests.helpers import answers_every_api, is_running
from tests.server.hostile import RUNENV, serve_process, wait_for
from tests.sshd import Server, User


def runenv(
    *args: str, env: dict[str, str], timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [RUNENV, *args], capture_output=True, text=True, env=env, timeout=timeout, check=False
    )


def clean(user: User, within: float = 10) -> list[str]:
    """What the user has left on the remote, once nothing or after ``within`` seconds."""
    deadline = time.monotonic() + within
    while (left := remote_leftovers(user)) and time.monotonic() < deadline:
        time.sleep(0.1)
    return left


@pytest.fixture
def ssh_settings(sshd: Server, ssh_user: User, known_hosts: str) -> dict[str, str]:
    return {"ssh_host": f"{ssh_user.name}@127.0.0.1:{sshd.port}", "ssh_key": str(ssh_user.key),
            "ssh_known_hosts": known_hosts}  # fmt: skip


@pytest.fixture
def ssh_env(ssh_settings: dict[str, str]) -> dict[str, str]:
    return {**os.environ, **{f"RUNENV_{k.upper()}": v for k, v in ssh_settings.items()}}


def test_doctor_reports_ssh_ready_with_its_sandbox(ssh_env: dict[str, str], sshd: Server) -> None:
    done = runenv("doctor", "--json", env=ssh_env)
    rows = {row["name"]: row for row in json.loads(done.stdout)["environments"]}
    row = rows["ssh"]
    assert row["ready"] is True, row
    assert any(f"127.0.0.1:{sshd.port}: each program in bubblewrap" in n for n in row["notes"])
    languages = {lang["name"]: lang for lang in row["languages"]}
    assert languages["python"]["available"] and languages["c"]["available"]
    unsandboxed = runenv("doctor", "--json", env={**ssh_env, "RUNENV_SSH_SANDBOX": "0"})
    rows = {row["name"]: row for row in json.loads(unsandboxed.stdout)["environments"]}
    assert any("programs unsandboxed" in note for note in rows["ssh"]["notes"]), rows["ssh"]


def test_doctor_says_what_is_missing_or_wrong() -> None:
    bare = {k: v for k, v in os.environ.items() if not k.startswith("RUNENV_SSH_")}
    done = runenv("doctor", env=bare)
    assert "✗ ssh: no host to connect to" in done.stdout.replace("\n", " "), done.stdout
    done = runenv("doctor", env={**bare, "RUNENV_SSH_HOST": "nowhere.invalid"})
    assert "✗ ssh: cannot resolve 'nowhere.invalid'" in done.stdout.replace("\n", ""), done.stdout


def test_run_over_ssh_from_the_command_line(ssh_env: dict[str, str], ssh_user: User) -> None:
    done = runenv("run", "-E", "ssh", "-c", "import sys; print(sys.argv[1:])", "--", "a b",
                  env=ssh_env)  # fmt: skip
    assert done.returncode == 0 and done.stdout == "['a b']\n", done
    timed_out = runenv("run", "-E", "ssh", "-t", "1", "-c", "while True: pass", env=ssh_env)
    assert timed_out.returncode == 124, timed_out
    assert clean(ssh_user) == []


@pytest.fixture
def served_ssh(ssh_settings: dict[str, str], tmp_path: Path) -> Iterator[tuple[str, int]]:
    (tmp_path / "workspaces").mkdir()
    with serve_process(tmp_path / "workspaces", environment="ssh", grace=5,
                       **ssh_settings) as served:  # fmt: skip
        yield served


def test_serve_with_the_ssh_environment(served_ssh: tuple[str, int], ssh_user: User) -> None:
    base, pid = served_ssh
    answers_every_api(base, "ssh")
    os.kill(pid, signal.SIGTERM)
    wait_for(lambda: not is_running(pid), 60, "the server's end")
    assert clean(ssh_user) == []


def test_a_killed_server_s_runs_die_on_the_remote(
    served_ssh: tuple[str, int], ssh_user: User
) -> None:
    base, pid = served_ssh

    def request() -> None:
        with contextlib.suppress(httpx.TransportError):  # the server is killed under it
            httpx.post(f"{base}/v1/execute", json={"code": "import time; time.sleep(60)",
                                                   "timeout": 60}, timeout=90)  # fmt: skip

    waiting = threading.Thread(target=request)
    waiting.start()
    try:
        wait_for(lambda: remote_leftovers(ssh_user) != [], 30, "the run's start on the remote")
        os.kill(pid, signal.SIGKILL)
        wait_for(lambda: not is_running(pid), 30, "the server's end")
    finally:
        waiting.join()
    assert clean(ssh_user) == []  # its watchdogs saw the connection end
