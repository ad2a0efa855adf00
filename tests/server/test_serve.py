"""``runenv serve`` as a real process: start-up, SIGTERM, leftovers."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.helpers import is_running

from .hostile import RUNENV, free_port, wait_for


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    port = free_port()
    env = {**os.environ, "RUNENV_TMPDIR": "/dev/shm", "RUNENV_GRACE": "5"}
    log = tmp_path / "serve.log"
    with log.open("wb") as sink:  # the server keeps its own copy of the descriptor
        proc = subprocess.Popen(
            [RUNENV, "serve", "--port", str(port), "--allow-local", "-E", "local"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=sink,
        )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            if httpx.get(f"{base}/healthz").status_code == 200:
                break
        except httpx.TransportError:
            pass
        assert proc.poll() is None, log.read_text()
        assert time.monotonic() < deadline
        time.sleep(0.05)
    try:
        yield proc, base
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=30)
        assert proc.stderr is None


def test_sigterm_lets_in_flight_runs_finish(served: tuple[subprocess.Popen[bytes], str]) -> None:
    proc, base = served
    answers: list[httpx.Response] = []
    code = "import os, time\nprint(os.getpid(), flush=True)\ntime.sleep(1.5)\nprint('finished')"
    call = threading.Thread(
        target=lambda: answers.append(
            httpx.post(
                f"{base}/v1/execute", json={"code": code, "environment": "local"}, timeout=30
            )
        )
    )
    call.start()
    time.sleep(0.7)  # the run is in flight
    proc.send_signal(signal.SIGTERM)
    call.join()
    assert proc.wait(timeout=30) in (0, -signal.SIGTERM)  # uvicorn re-raises the signal
    result = answers[0].json()
    assert result["success"] and result["stdout"].endswith("finished\n")
    with pytest.raises(httpx.TransportError):
        httpx.get(f"{base}/healthz")  # it stopped accepting


def test_sigterm_past_the_grace_kills_the_run(
    served: tuple[subprocess.Popen[bytes], str],
) -> None:
    proc, base = served
    answers: list[object] = []
    code = "import os, time\nprint(os.getpid(), flush=True)\ntime.sleep(60)"
    pids: list[int] = []

    def stream() -> None:
        try:
            with httpx.stream("POST", f"{base}/v1/execute/stream", timeout=90,
                              json={"code": code, "environment": "local"}) as response:  # fmt: skip
                text = ""  # print() may arrive as "1234" then "\n"
                for line in response.iter_lines():
                    if line and "stdout" in json.loads(line):
                        text += json.loads(line)["stdout"]
                        if text.endswith("\n") and not pids:
                            pids.append(int(text))
            answers.append("ended")
        except httpx.TransportError as exc:
            answers.append(exc)

    call = threading.Thread(target=stream)
    call.start()
    deadline = time.monotonic() + 30
    while not pids and time.monotonic() < deadline:
        time.sleep(0.05)
    assert pids, "the run did not start"
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) in (0, -signal.SIGTERM)  # after 5 s of grace
    call.join(timeout=30)
    assert answers
    deadline = time.monotonic() + 10
    while is_running(pids[0]) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not is_running(pids[0]), "the run outlived the server"


def test_serve_refuses_local_without_the_flag() -> None:
    done = subprocess.run([RUNENV, "serve", "-E", "local"], capture_output=True, text=True,
                          timeout=60)  # fmt: skip
    assert done.returncode == 2 and "--allow-local" in done.stderr


def test_a_run_cut_by_the_grace_gets_an_answer(tmp_path: Path) -> None:
    port = free_port()
    log = tmp_path / "serve.log"
    env = {**os.environ, "RUNENV_GRACE": "1"}
    with log.open("wb") as sink:
        argv = [RUNENV, "serve", "--port", str(port), "--allow-local", "-E", "local"]
        proc = subprocess.Popen(argv, env=env, stdout=sink, stderr=sink)  # access log: stdout
    base = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: _answers(base), what="the server")
        answers: list[httpx.Response] = []
        body = {"code": "import time\ntime.sleep(60)", "environment": "local"}
        call = threading.Thread(
            target=lambda: answers.append(httpx.post(f"{base}/v1/execute", json=body, timeout=60))
        )
        call.start()
        wait_for(lambda: _running_children(proc.pid), within=30, what="the run")
        proc.send_signal(signal.SIGTERM)
        call.join(timeout=60)
        assert proc.wait(timeout=30) in (0, -signal.SIGTERM)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert answers and answers[0].status_code == 503
    assert answers[0].json()["error"]["type"] == "ShuttingDown"
    text = log.read_text()
    assert '"POST /v1/execute HTTP/1.1" 503' in text  # the access log
    assert "Traceback" not in text and "CancelledError" not in text


def _answers(base: str) -> bool:
    try:
        return httpx.get(f"{base}/healthz").status_code == 200
    except httpx.TransportError:
        return False


def _running_children(pid: int) -> bool:
    return bool(Path(f"/proc/{pid}/task/{pid}/children").read_text().split())


def test_a_busy_port_is_one_clear_line() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = subprocess.run([RUNENV, "serve", "--port", str(port)], capture_output=True,
                              text=True, timeout=60, check=False)  # fmt: skip
    assert done.returncode == 125
    said = f"runenv: cannot listen on 127.0.0.1:{port}: Address already in use"
    assert done.stderr.strip() == said


@pytest.mark.parametrize(
    ("flags", "logged"),
    [([], True), (["--log-level", "warning"], False), (["--no-access-log"], False)],
)
def test_the_access_log_and_its_level(tmp_path: Path, flags: list[str], logged: bool) -> None:
    port = free_port()
    log = tmp_path / "serve.log"
    with log.open("wb") as sink:
        proc = subprocess.Popen([RUNENV, "serve", "--port", str(port), *flags],
                                stdout=sink, stderr=sink)  # fmt: skip
    try:
        wait_for(lambda: _answers(f"http://127.0.0.1:{port}"), what="the server")
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
    assert ('"GET /healthz HTTP/1.1" 200' in log.read_text()) is logged


def test_help_shows_defaults_and_every_api() -> None:
    wide = {**os.environ, "COLUMNS": "200"}
    done = subprocess.run([RUNENV, "serve", "--help"], capture_output=True, text=True,
                          timeout=60, env=wide, check=False)  # fmt: skip
    text = " ".join(done.stdout.split())
    assert "E2B's envd API" in text and "Piston" in text and "SandboxFusion" in text
    assert "[default: 127.0.0.1]" in text and "[default: 8000]" in text
    assert "[default: info]" in text
