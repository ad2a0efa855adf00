"""Clients that misbehave, and ways to watch a server from outside, for the hardening tests."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlsplit

import httpx

RUNENV = str(Path(sys.executable).with_name("runenv"))


def send_only(url: str, method: str, path: str, body: bytes = b"", **headers: str) -> socket.socket:
    """Send a whole request and read nothing: a client that never reads its response."""
    parts = urlsplit(url)
    sock = socket.create_connection((parts.hostname, parts.port))
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # take little, read nothing
    lines = [f"{method} {path} HTTP/1.1", f"Host: {parts.hostname}"]
    lines += [f"{name.replace('_', '-')}: {value}" for name, value in headers.items()]
    if body:
        lines += ["Content-Type: application/json", f"Content-Length: {len(body)}"]
    sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode() + body)
    return sock


def send_json(url: str, path: str, payload: dict[str, object]) -> socket.socket:
    return send_only(url, "POST", path, json.dumps(payload).encode())


def half_sent(url: str) -> socket.socket:
    """A connection that starts a request and never finishes its headers."""
    parts = urlsplit(url)
    sock = socket.create_connection((parts.hostname, parts.port))
    sock.sendall(b"POST /v1/execute HTTP/1.1\r\nHost: x\r\nContent-Ty")
    return sock


def closed_by_server(sock: socket.socket, within: float) -> bool:
    """Whether the server closes ``sock`` (end of file or reset) within ``within`` s."""
    sock.settimeout(within)
    try:
        while sock.recv(65536):
            pass
        return True
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False


def metric(url: str, name: str) -> float:
    """The sum of a Prometheus metric's samples on the server."""
    text = httpx.get(f"{url}/metrics", timeout=10).text
    pattern = rf"^{re.escape(name)}(?:{{[^}}]*}})? (\S+)$"
    return sum(float(v) for v in re.findall(pattern, text, re.MULTILINE))


def wait_for(condition: object, within: float = 30.0, what: str = "the condition") -> None:
    """Poll ``condition()`` until it is true (the server's state is only visible by asking)."""
    deadline = time.monotonic() + within
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, f"{what} did not happen within {within} s"
        time.sleep(0.02)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def serve_process(tmp: Path, **settings: object) -> Iterator[tuple[str, int]]:
    """``runenv serve`` as a process of its own (so its memory can be measured), with
    ``RUNENV_<SETTING>`` variables; yields its URL and pid, and stops it by pid."""
    port = free_port()
    env = {**os.environ, "RUNENV_TMPDIR": str(tmp)}
    env.update({f"RUNENV_{k.upper()}": str(v) for k, v in settings.items()})
    log = tmp.parent / f"serve-{port}.log"
    with log.open("wb") as sink:
        proc = subprocess.Popen(
            [RUNENV, "serve", "--port", str(port)], env=env, stdout=sink, stderr=sink
        )
    url = f"http://127.0.0.1:{port}"
    try:

        def up() -> bool:
            assert proc.poll() is None, log.read_text()
            try:
                return httpx.get(f"{url}/healthz", timeout=5).status_code == 200
            except httpx.TransportError:
                return False

        wait_for(up, 60, "the server's start")
        yield url, proc.pid
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.unlink(missing_ok=True)


def rss(pid: int, field: str = "VmRSS") -> int:
    """Resident memory of ``pid`` in bytes (``VmHWM``: its peak)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no {field} for {pid}")
