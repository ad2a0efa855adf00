"""``runenv serve`` as a real process: start-up, SIGTERM, leftovers."""

from __future__ import annotations

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

from tests.helpers import is_running

from .hostile import RUNENV, free_port


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
