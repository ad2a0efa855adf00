"""Piston's interactive WebSocket, ``/api/v2/connect``, through a real WebSocket client."""

from __future__ import annotations

import json
import os
import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import ClientConnection, connect

from run_environments.server import ServerSettings, piston
from run_environments.testing.samples import HELLO

from .conftest import running


def ws_url(url: str) -> str:
    return url.replace("http://", "ws://") + "/api/v2/connect"


@pytest.fixture
def ws(url: str) -> Iterator[ClientConnection]:
    with connect(ws_url(url), open_timeout=30) as connection:
        yield connection


def send(ws: ClientConnection, **message: Any) -> None:
    ws.send(json.dumps(message))


def messages(ws: ClientConnection, until: float = 60) -> tuple[list[dict[str, Any]], int, str]:
    """Every message to the close: (messages, close code, close reason)."""
    got = []
    deadline = time.monotonic() + until
    frame = None
    try:
        while True:
            got.append(json.loads(ws.recv(timeout=max(deadline - time.monotonic(), 0.01))))
    except ConnectionClosed as closed:
        frame = closed.rcvd
    assert frame is not None, "closed without a close frame"
    return got, frame.code, frame.reason


def until(ws: ClientConnection, kind: str, **fields: Any) -> list[dict[str, Any]]:
    """Messages up to and including the first of ``kind`` with ``fields``; for ``data``,
    until the stream's text so far ends with ``fields["data"]`` (output comes in chunks)."""
    got = []
    text = ""
    while True:
        message = json.loads(ws.recv(timeout=60))
        got.append(message)
        if message["type"] != kind:
            continue
        if kind == "data":
            text += message["data"]
            if text.endswith(fields.get("data", "")):
                return got
        elif all(message.get(k) == v for k, v in fields.items()):
            return got


def init(ws: ClientConnection, language: str, code: str, **more: Any) -> None:
    send(ws, type="init", language=language, version="*", files=[{"content": code}], **more)


def output(got: list[dict[str, Any]], stream: str = "stdout") -> str:
    return "".join(m["data"] for m in got if m["type"] == "data" and m["stream"] == stream)


CONVERSATION = """
import sys
print('name?', flush=True)
name = sys.stdin.readline().strip()
print('hello', name, flush=True)
print('age?', flush=True)
age = sys.stdin.readline().strip()
sys.stderr.write('noted\\n')
print(name, 'is', age, flush=True)
"""


def test_a_conversation_with_a_running_program(ws: ClientConnection) -> None:
    init(ws, "py3", CONVERSATION, run_timeout=20000)
    first = until(ws, "data", data="name?\n")
    runtime = first[0]
    assert runtime["type"] == "runtime" and runtime["language"] == "python"
    assert runtime["version"].startswith("3.")
    assert first[1] == {"type": "stage", "stage": "run"}
    send(ws, type="data", stream="stdin", data="Ada\n")
    assert output(until(ws, "data", data="age?\n")) == "hello Ada\nage?\n"
    send(ws, type="data", stream="stdin", data="36\n")
    rest, code, reason = messages(ws)
    assert output(rest) == "Ada is 36\n" and output(rest, "stderr") == "noted\n"
    assert rest[-1] == {"type": "exit", "stage": "run", "code": 0, "signal": None}
    assert (code, reason) == (4999, "Job Completed")


def test_a_compiled_language_has_both_stages(ws: ClientConnection) -> None:
    init(ws, "gcc", HELLO["c"])
    got, code, _ = messages(ws)
    kinds = [(m["type"], m.get("stage")) for m in got]
    assert kinds == [
        ("runtime", None),
        ("stage", "compile"),
        ("exit", "compile"),
        ("stage", "run"),
        ("data", None),
        ("exit", "run"),
    ]
    assert got[2]["code"] == 0 and got[4]["data"] == "hello from c\n"
    assert got[5]["code"] == 0 and code == 4999


def test_a_failed_compilation_says_why_and_never_runs(ws: ClientConnection) -> None:
    init(ws, "c", "int main(void) { return nope; }")
    got, code, _ = messages(ws)
    assert "nope" in output(got, "stderr")
    assert got[-1]["type"] == "exit" and got[-1]["stage"] == "compile"
    assert got[-1]["code"] not in (0, None)
    assert not any(m["type"] == "stage" and m["stage"] == "run" for m in got)
    assert code == 4999


def test_a_signal_reaches_the_program(ws: ClientConnection) -> None:
    code = "import time\nprint('pid', flush=True)\ntime.sleep(60)"
    init(ws, "python", code, run_timeout=30000)
    until(ws, "data", data="pid\n")
    send(ws, type="signal", signal="SIGINT")
    got, close, _ = messages(ws)
    assert "KeyboardInterrupt" in output(got, "stderr")
    assert got[-1] == {"type": "exit", "stage": "run", "code": None, "signal": "SIGINT"}
    assert close == 4999


def test_the_run_timeout_ends_a_program_waiting_for_input(ws: ClientConnection) -> None:
    init(ws, "python", "print(input())", run_timeout=500)
    got, code, _ = messages(ws)
    assert got[-1] == {"type": "exit", "stage": "run", "code": None, "signal": "SIGKILL"}
    assert code == 4999


def test_init_stdin_comes_first(ws: ClientConnection) -> None:
    init(ws, "python", "print(input(), input())", stdin="one\n")
    until(ws, "stage")
    send(ws, type="data", stream="stdin", data="two\n")
    got, _, _ = messages(ws)
    assert output(got) == "one two\n"


@pytest.mark.parametrize(
    ("first", "then", "code", "reason"),
    [
        ({"type": "data", "stream": "stdin", "data": "x"}, None, 4003, "Not yet initialized"),
        ({"type": "signal", "signal": "SIGKILL"}, None, 4003, "Not yet initialized"),
        ("init", {"type": "init"}, 4000, "Already Initialized"),
        (
            "init",
            {"type": "data", "stream": "stdout", "data": "x"},
            4004,
            "Can only write to stdin",
        ),
        ("init", {"type": "signal", "signal": "SIGNOPE"}, 4005, "Invalid signal"),
        ("init", {"type": "signal", "signal": 9}, 4005, "Invalid signal"),
    ],
)
def test_a_client_mistake_closes_with_pistons_code(
    ws: ClientConnection, first: Any, then: Any, code: int, reason: str
) -> None:
    if first == "init":
        init(ws, "python", "import time\nprint('up', flush=True)\ntime.sleep(30)")
        until(ws, "data")
        first = then
    ws.send(json.dumps(first))
    _, got_code, got_reason = messages(ws)
    assert (got_code, got_reason) == (code, reason)


def test_no_init_within_a_second_closes(ws: ClientConnection) -> None:
    send(ws, type="hello")  # not a type Piston knows: ignored, as Piston does
    start = time.monotonic()
    got, code, reason = messages(ws)
    assert (got, code, reason) == ([], 4001, "Initialization Timeout")
    assert time.monotonic() - start < 5


@pytest.mark.parametrize(
    ("message", "said"),
    [
        ({"type": "init", "language": "cobol", "version": "*", "files": [{"content": "x"}]},
         "cobol-* runtime is unknown"),
        ({"type": "init", "language": "python", "version": "2.7", "files": [{"content": "x"}]},
         "python-2.7 runtime is unknown"),
        ({"type": "init", "language": "python", "version": "*", "files": []}, "files"),
        ({"type": "init", "language": "python", "version": "*", "files": [{"content": "x"}],
          "run_timeout": -5}, "run_timeout"),
        ("{not json", "Expecting property name"),
    ],
)  # fmt: skip
def test_a_bad_init_is_notified_then_closed(ws: ClientConnection, message: Any, said: str) -> None:
    ws.send(message if isinstance(message, str) else json.dumps(message))
    got, code, reason = messages(ws)
    assert len(got) == 1 and got[0]["type"] == "error" and said in got[0]["message"], got
    assert (code, reason) == (4002, "Notified Error")


def test_a_client_that_leaves_ends_its_program(url: str) -> None:
    name = f"leaves_{uuid.uuid4().hex}.py"  # the program is found by its file's name
    code = "import time\nprint('up', flush=True)\ntime.sleep(60)"
    with connect(ws_url(url)) as ws:
        send(ws, type="init", language="python", version="*", run_timeout=60000,
             files=[{"name": name, "content": code}])  # fmt: skip
        until(ws, "data")
        assert _running(name)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and _running(name):
        time.sleep(0.1)
    assert not _running(name)


def _running(name: str) -> list[int]:
    """The processes of this machine with ``name`` in their command line."""
    found = []
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                with open(f"/proc/{entry.name}/cmdline", "rb") as fh:
                    if name.encode() in fh.read():
                        found.append(int(entry.name))
            except OSError:
                continue
    return found


def test_a_quiet_websocket_outlives_the_header_timeout(server_envs: dict) -> None:
    settings = ServerSettings(header_timeout=0.5, max_timeout=60)
    with running(settings, server_envs) as base, connect(ws_url(base)) as ws:
        init(ws, "python", "print(input())", run_timeout=20000)
        until(ws, "stage")
        time.sleep(1.5)  # a half-sent request would be closed by now; a WebSocket is not one
        send(ws, type="data", stream="stdin", data="still here\n")
        got, code, _ = messages(ws)
    assert output(got) == "still here\n" and code == 4999


def test_a_client_that_stops_reading_loses_its_job_not_the_servers_slot(
    server_envs: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(piston, "SEND_WITHIN", 1.0)
    settings = ServerSettings(max_concurrency=1, max_queue=0, max_output_bytes=256 << 20)
    # incompressible output, and no compression: the server's sends block once the
    # connection's buffers are full
    flood = "import os, sys\nwhile True: sys.stdout.write(os.urandom(32768).hex())"
    execute = {"language": "python", "version": "*", "files": [{"content": "print(2)"}]}
    with running(settings, server_envs) as base:
        assert httpx.get(f"{base}/api/v2/runtimes", timeout=60).status_code == 200
        with connect(ws_url(base), max_queue=1, compression=None) as ws:
            init(ws, "python", flood, run_timeout=60000)
            until(ws, "data")  # it runs; from here on this client reads nothing
            start = time.monotonic()
            statuses = []
            while time.monotonic() - start < 30:
                answer = httpx.post(f"{base}/api/v2/execute", json=execute, timeout=60)
                statuses.append(answer.status_code)
                if answer.status_code == 200:
                    break
                time.sleep(0.2)
            freed = time.monotonic() - start
        assert statuses[0] == 429  # the server's one slot was the stalled job's
        assert statuses[-1] == 200 and answer.json()["run"]["stdout"] == "2\n"
        assert freed < 15  # SEND_WITHIN after the client stopped, not the run's 60 s


def test_the_token_guards_the_websocket_too(server_envs: dict) -> None:
    settings = ServerSettings(token="s3cret", max_timeout=60)
    with running(settings, server_envs) as base:
        with pytest.raises(InvalidStatus) as refused:
            connect(ws_url(base), open_timeout=30)
        assert refused.value.response.status_code == 403
        headers = {"Authorization": "Bearer s3cret"}
        with connect(ws_url(base), additional_headers=headers, open_timeout=30) as ws:
            init(ws, "python", "print('in')")
            got, code, _ = messages(ws)
        assert output(got) == "in\n" and code == 4999
