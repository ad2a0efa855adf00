"""Servers for the tests: uvicorn on 127.0.0.1, in a thread of this process."""

from __future__ import annotations

import contextlib
import dataclasses
import threading
import time
from collections.abc import Iterator, Mapping
from pathlib import Path

import httpx
import pytest
import uvicorn

from run_environments import LocalRunEnvironment, RunEnvironment, SandboxRunEnvironment
from run_environments.server import ServerSettings, create_app, server_config


@contextlib.contextmanager
def running(
    settings: ServerSettings, environments: Mapping[str, RunEnvironment] | None = None
) -> Iterator[str]:
    """Serve on a free port of 127.0.0.1; yields the base URL."""
    with serving(settings, environments) as (base, _):
        yield base


@contextlib.contextmanager
def serving(
    settings: ServerSettings,
    environments: Mapping[str, RunEnvironment] | None = None,
    port: int = 0,
) -> Iterator[tuple[str, uvicorn.Server]]:
    """Serve on 127.0.0.1 (a free port by default); yields the base URL and the server."""
    app = create_app(settings, environments)
    local = dataclasses.replace(settings, host="127.0.0.1", port=port)
    server = uvicorn.Server(server_config(app, local, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the server did not start"
        time.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}", server
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        assert not thread.is_alive(), "the server did not stop"


@pytest.fixture(scope="module")
def workspaces() -> Iterator[Path]:
    import shutil
    import tempfile

    path = Path(tempfile.mkdtemp(prefix="runenv-server-tests-", dir="/dev/shm"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path)


@pytest.fixture(scope="module")
def server_envs(workspaces: Path) -> dict[str, RunEnvironment]:
    return {
        "sandbox": SandboxRunEnvironment(tmp_dir=str(workspaces)),
        "local": LocalRunEnvironment(tmp_dir=str(workspaces)),
    }


@pytest.fixture(scope="module")
def url(server_envs: dict[str, RunEnvironment]) -> Iterator[str]:
    """A server with the sandbox by default and local allowed."""
    with running(ServerSettings(allow_local=True, max_timeout=60), server_envs) as base:
        yield base


@pytest.fixture
def http(url: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=url, timeout=60) as client:
        yield client
