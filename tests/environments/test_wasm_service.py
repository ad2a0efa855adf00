"""The wasm environment from the command line and behind ``runenv serve``."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import threading
from pathlib import Path

import httpx

from tests.environments.test_wasm import runners
from tests.helpers import is_running
from tests.server.hostile import RUNENV, serve_process, wait_for


def runenv(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [RUNENV, *args], capture_output=True, text=True, timeout=120, check=False,
        env=env if env is not None else dict(os.environ),
    )  # fmt: skip


def test_doctor_reports_wasm_and_its_languages() -> None:
    done = runenv("doctor", "--json")
    rows = {row["name"]: row for row in json.loads(done.stdout)["environments"]}
    wasm = rows["wasm"]
    assert wasm["ready"], wasm
    available = {lang["name"] for lang in wasm["languages"] if lang["available"]}
    assert available == {"python", "javascript"}
    assert any(note.startswith("Node.js v") for note in wasm["notes"]), wasm


def test_doctor_says_when_the_packages_are_missing(tmp_path: Path) -> None:
    done = runenv("doctor", "--json", env={**os.environ, "RUNENV_WASM_DIR": str(tmp_path)})
    wasm = {row["name"]: row for row in json.loads(done.stdout)["environments"]}["wasm"]
    assert not wasm["ready"]
    python = next(lang for lang in wasm["languages"] if lang["name"] == "python")
    assert "wasm install" in python["missing"], python


def test_run_in_wasm_from_the_command_line() -> None:
    done = runenv("run", "-E", "wasm", "-c", "import sys; print(sys.argv[1:], sys.platform)",
                  "--", "a b")  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout == "['a b'] emscripten\n"
    js = runenv("run", "-E", "wasm", "-l", "javascript", "-c", "process.exit(4)")
    assert js.returncode == 4, js.stderr


def test_serve_with_the_wasm_environment(tmp_path: Path) -> None:
    with serve_process(tmp_path / "workspaces", environment="wasm", grace=5) as (base, pid):
        native = httpx.post(f"{base}/v1/execute", timeout=60,
                            json={"code": "print(6 * 7)", "language": "python"}).json()  # fmt: skip
        assert native["stdout"] == "42\n" and native["environment"] == "wasm", native
        request = {"code": "console.log(1 + 1)", "language": "nodejs"}
        fusion = httpx.post(f"{base}/run_code", timeout=60, json=request).json()
        assert fusion["status"] == "Success", fusion
        assert fusion["run_result"]["stdout"] == "2\n", fusion
        os.kill(pid, signal.SIGTERM)
        wait_for(lambda: not is_running(pid), 60, "the server's end")
    assert runners() == {}


def children(pid: int) -> set[int]:
    found = set()
    for entry in Path("/proc").iterdir():
        try:
            stat = (entry / "stat").read_text()
        except (OSError, ValueError):
            continue
        if entry.name.isdigit() and int(stat[stat.rindex(")") + 2 :].split()[1]) == pid:
            found.add(int(entry.name))
    return found


def test_a_killed_server_leaves_no_interpreter_even_a_busy_one(tmp_path: Path) -> None:
    with serve_process(tmp_path / "workspaces", environment="wasm", grace=5) as (base, pid):
        answered = httpx.post(f"{base}/v1/execute", json={"code": "pass"}, timeout=60)
        assert answered.json()["success"], answered.text
        spin = {"code": "while True: pass", "timeout": 120}

        def spinning() -> None:  # a run spinning in its guest while the server dies
            with contextlib.suppress(httpx.HTTPError):
                httpx.post(f"{base}/v1/execute", json=spin, timeout=120)

        client = threading.Thread(target=spinning)
        client.start()
        wait_for(lambda: busy_runners(pid), 30, "a busy runner")
        spawned = children(pid)
        os.kill(pid, signal.SIGKILL)
        wait_for(lambda: not any(is_running(p) for p in spawned), 30, "the runners' end")
        client.join()


def busy_runners(pid: int) -> bool:
    """Whether a runner of the server spins (is running, not sleeping on its input)."""
    for child in children(pid):
        try:
            stat = Path(f"/proc/{child}/stat").read_text()
        except OSError:
            continue
        if stat[stat.rindex(")") + 2] == "R":
            return True
    return False
