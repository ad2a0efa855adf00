"""The synchronous facade."""

from __future__ import annotations

import inspect
import subprocess
import sys
import threading

from run_environments import LocalRunEnvironment, RunEnvironment, SyncRunEnvironment
from run_environments._sync import portal
from tests.helpers import is_running


def public_methods(cls: type) -> dict[str, inspect.Signature]:
    return {
        name: inspect.signature(member)
        for name, member in inspect.getmembers(cls, inspect.isfunction)
        if not name.startswith("_")
    }


def test_same_methods_and_signatures_as_the_async_interface() -> None:
    async_methods = public_methods(RunEnvironment)
    sync_methods = public_methods(SyncRunEnvironment)
    assert set(async_methods) == set(sync_methods)
    for name, signature in async_methods.items():
        assert str(signature) == str(sync_methods[name]), name
    assert {"execute", "cleanup", "is_ready", "status"} <= set(sync_methods)


def test_runs_code_and_reports() -> None:
    with SyncRunEnvironment("local") as env:
        assert env.is_ready()
        assert env.name == "local"
        result = env.execute("print(6 * 7)")
        assert result.stdout == "42\n"
        assert result.environment == "local"
        assert env.execute("echo $X", language="bash", env={"X": "y"}).stdout == "y\n"
        assert env.status().ready


def test_one_loop_thread_serves_every_call() -> None:
    env = SyncRunEnvironment(LocalRunEnvironment())
    env.execute("pass")
    threads_before = threading.active_count()
    first = portal()
    for _ in range(5):
        env.execute("pass")
    assert portal() is first
    assert threading.active_count() == threads_before
    env.cleanup()


def test_callbacks_run_for_sync_callers() -> None:
    seen: list[str] = []
    with SyncRunEnvironment() as env:
        env.execute("print('a'); print('b')", on_stdout=seen.append)
    assert "".join(seen) == "a\nb\n"


def test_exit_cleans_up_running_programs() -> None:
    """A script that leaves a sync environment open still leaves no process behind."""
    script = (
        "import threading, time\n"
        "from run_environments import SyncRunEnvironment\n"
        "env = SyncRunEnvironment('local')\n"
        "r = env.execute('setsid sleep 300 > /dev/null & echo $!', language='bash')\n"
        "print(r.stdout.strip(), flush=True)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True
    )
    pid = int(out.stdout.strip())
    assert not is_running(pid)  # it left the process group: only the exit cleanup found it


def test_the_default_is_the_sandbox() -> None:
    with SyncRunEnvironment() as env:
        assert env.name == "sandbox"
        result = env.execute("import os; print(os.getuid())")
    assert result.stdout == "65534\n"  # isolated: not this process's user
