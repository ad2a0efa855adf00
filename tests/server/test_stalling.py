"""One client must not stall the server: slots are held only by runs that someone waits for,
connections only by clients that send their requests in time."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from run_environments import SandboxRunEnvironment
from run_environments.server import ServerSettings
from tests.sandboxing import sandbox_processes

from .conftest import running
from .hostile import closed_by_server, half_sent, metric, send_json, send_only, wait_for

SLEEPER = "import time\ntime.sleep(60)"


@pytest.fixture(scope="module")
def one_slot_env(workspaces: Path) -> SandboxRunEnvironment:
    return SandboxRunEnvironment(tmp_dir=str(workspaces))


@pytest.fixture(scope="module")
def one_slot(one_slot_env: SandboxRunEnvironment) -> Iterator[str]:
    """A server that runs one execution at a time, with short deadlines for requests."""
    settings = ServerSettings(max_concurrency=1, max_timeout=120, header_timeout=1, body_timeout=1)
    with running(settings, {"sandbox": one_slot_env}) as url:
        yield url


def served_now(url: str) -> httpx.Response:
    """A well-behaved request; its client gives up after 20 s (the runs it competes with
    last 60 s)."""
    return httpx.post(f"{url}/v1/execute", json={"code": "print('served')"}, timeout=20)


def test_a_streaming_client_that_never_reads_frees_its_slot(one_slot: str) -> None:
    flood = "import sys\nfor _ in range(64):\n    sys.stdout.write('x' * 65536 + '\\n')"
    body = {"code": flood, "max_output_bytes": 8 << 20, "timeout": 30}
    before = metric(one_slot, "runenv_executions_total")
    reader = send_json(one_slot, "/v1/execute/stream", body)
    try:
        wait_for(lambda: metric(one_slot, "runenv_executions_total") > before, what="the run")
        response = served_now(one_slot)
        assert response.status_code == 200 and response.json()["stdout"] == "served\n"
    finally:
        reader.close()


ROUTES = {
    "native": ("/v1/execute", {"code": SLEEPER, "timeout": 100}),
    "sandboxfusion": ("/run_code", {"code": SLEEPER, "language": "python", "run_timeout": 100}),
    "piston": (
        "/api/v2/execute",
        {"language": "python", "files": [{"content": SLEEPER}], "run_timeout": 100_000},
    ),
}


@pytest.mark.parametrize("route", ROUTES)
def test_a_client_that_leaves_frees_its_slot_and_stops_its_run(
    one_slot: str, one_slot_env: SandboxRunEnvironment, route: str
) -> None:
    path, body = ROUTES[route]
    if route == "piston":
        httpx.get(f"{one_slot}/api/v2/runtimes", timeout=120)  # probe first, outside the test
    client = send_json(one_slot, path, body)
    wait_for(lambda: metric(one_slot, "runenv_in_flight") == 1, what="the run's start")
    client.close()
    response = served_now(one_slot)
    assert response.status_code == 200 and response.json()["stdout"] == "served\n"
    wait_for(lambda: not sandbox_processes(one_slot_env), 10, "the abandoned run's end")


def test_half_sent_requests_are_closed_and_bounded(workspaces: Path) -> None:
    settings = ServerSettings(header_timeout=1, body_timeout=1, max_connections=50)
    env = SandboxRunEnvironment(tmp_dir=str(workspaces))
    with running(settings, {"sandbox": env}) as url:
        descriptors = len(os.listdir("/proc/self/fd"))
        stalled = [half_sent(url) for _ in range(200)]
        try:
            # past the maximum, connections are closed at once; the rest at the deadline
            assert all(closed_by_server(sock, 10) for sock in stalled)
            assert len(os.listdir("/proc/self/fd")) <= descriptors + len(stalled) + 5
        finally:
            for sock in stalled:
                sock.close()
        response = httpx.post(f"{url}/v1/execute", json={"code": "print(1)"}, timeout=20)
        assert response.status_code == 200
        # a body that stops half-way gets 408 at the body deadline
        partial = send_only(url, "POST", "/v1/execute", Content_Length="1000")
        partial.sendall(b'{"code": "pri')
        partial.settimeout(10)
        try:
            assert partial.recv(4096).startswith(b"HTTP/1.1 408 ")
        finally:
            partial.close()
    assert len(os.listdir("/proc/self/fd")) <= descriptors + 5


def test_first_runtime_requests_probe_once(workspaces: Path) -> None:
    env = SandboxRunEnvironment(tmp_dir=str(workspaces))
    with running(ServerSettings(max_concurrency=2), {"sandbox": env}) as url:
        answers: list[httpx.Response] = []

        def ask() -> None:
            answers.append(httpx.get(f"{url}/api/v2/runtimes", timeout=120))

        threads = [threading.Thread(target=ask) for _ in range(20)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert [a.status_code for a in answers] == [200] * 20
        runtimes = answers[0].json()
        assert all(a.json() == runtimes for a in answers)
        # one probe per runtime, not twenty
        assert metric(url, "runenv_executions_total") == len(runtimes)


def test_held_request_bodies_are_bounded(workspaces: Path) -> None:
    settings = ServerSettings(
        max_concurrency=1, max_body_bytes=1 << 20, max_pending_bytes=2 << 20, max_timeout=120
    )
    env = SandboxRunEnvironment(tmp_dir=str(workspaces))
    padding = "#" * (900 << 10)
    with running(settings, {"sandbox": env}) as url:
        first = send_json(url, "/v1/execute", {"code": SLEEPER, "timeout": 100})
        wait_for(lambda: metric(url, "runenv_in_flight") == 1, what="the first run")
        queued = [send_json(url, "/v1/execute", {"code": f"{padding}\nprint(1)"}) for _ in range(2)]
        wait_for(lambda: metric(url, "runenv_queue_length") == 2, what="two queued requests")
        refused = httpx.post(f"{url}/v1/execute", json={"code": f"{padding}\nprint(2)"}, timeout=20)
        assert refused.status_code == 503
        assert "too many request bodies" in refused.json()["error"]["message"]
        first.close()
        for sock in queued:
            sock.close()
        wait_for(lambda: metric(url, "runenv_in_flight") == 0, what="the abandoned runs' end")
        accepted = httpx.post(
            f"{url}/v1/execute", json={"code": f"{padding}\nprint(3)"}, timeout=20
        )
        assert accepted.status_code == 200 and accepted.json()["stdout"] == "3\n"
