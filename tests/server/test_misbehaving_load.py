"""Load with misbehaving clients beside well-behaved ones: clients that never read their
streams, clients that leave mid-run and connections that never finish their headers take
nothing the well-behaved clients need."""

from __future__ import annotations

import socket
import threading
from pathlib import Path

import httpx

from run_environments import SandboxRunEnvironment
from run_environments.server import ServerSettings
from tests.sandboxing import sandbox_processes

from .conftest import running
from .hostile import half_sent, metric, send_json, wait_for

FLOOD = "import sys\nfor _ in range(256):\n    sys.stdout.write('x' * 65536 + '\\n')"
SLEEPER = "import time\ntime.sleep(60)"


def test_well_behaved_clients_are_served_beside_misbehaving_ones(workspaces: Path) -> None:
    settings = ServerSettings(max_concurrency=2, max_timeout=60, header_timeout=2, body_timeout=2)
    env = SandboxRunEnvironment(tmp_dir=str(workspaces))
    with running(settings, {"sandbox": env}) as url:
        hostile: list[socket.socket] = []
        results: dict[int, httpx.Response | Exception] = {}
        try:
            # clients that never read what they asked for, and half-sent connections
            for _ in range(4):
                body = {"code": FLOOD, "max_output_bytes": 32 << 20, "timeout": 30}
                hostile.append(send_json(url, "/v1/execute/stream", body))
            hostile += [half_sent(url) for _ in range(100)]

            def leave_mid_run() -> None:
                sock = send_json(url, "/v1/execute", {"code": SLEEPER, "timeout": 50})
                wait_for(lambda: metric(url, "runenv_in_flight") >= 1, what="a run")
                sock.close()

            def behave(i: int) -> None:
                body = {"code": f"print({i})", "timeout": 10}
                try:
                    results[i] = httpx.post(f"{url}/v1/execute", json=body, timeout=60)
                except Exception as exc:
                    results[i] = exc

            threads = [threading.Thread(target=leave_mid_run) for _ in range(4)]
            threads += [threading.Thread(target=behave, args=(i,)) for i in range(16)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
        finally:
            for sock in hostile:
                sock.close()
        served = {
            i: r.json()["stdout"]
            for i, r in results.items()
            if isinstance(r, httpx.Response) and r.status_code == 200
        }
        assert served == {i: f"{i}\n" for i in range(16)}, results
        wait_for(lambda: metric(url, "runenv_in_flight") == 0, 60, "the hostile runs' end")
        wait_for(lambda: not sandbox_processes(env), 30, "the hostile programs' end")
