"""The tests' own daemons outlive a test session that was killed (SIGKILL, a CI timeout):
the next session stops them by the PIDs their owner files name and removes their
directories."""

from __future__ import annotations

import json
import subprocess
import tempfile
from pathlib import Path

from tests.dockerd import sweep_abandoned
from tests.helpers import is_running


def test_a_killed_session_s_daemon_is_stopped_and_its_directories_removed() -> None:
    run = Path(tempfile.mkdtemp(prefix="runenv-dockerd-", dir="/run"))
    data = Path(tempfile.mkdtemp(prefix="runenv-dockerd-", dir="/var/lib"))
    session = subprocess.Popen(["true"])
    session.wait()  # a session that is gone
    live = subprocess.Popen(["sleep", "300"])  # a session still running
    daemon = subprocess.Popen(["sh", "-c", "sleep 300", str(run)], start_new_session=True)
    other = Path(tempfile.mkdtemp(prefix="runenv-podman-", dir="/run"))
    kept = subprocess.Popen(["sh", "-c", "sleep 300", str(other)], start_new_session=True)
    try:
        assert is_running(daemon.pid)
        assert is_running(kept.pid)
        (run / "owner").write_text(json.dumps([session.pid, daemon.pid, [str(data)]]))
        (other / "owner").write_text(json.dumps([live.pid, kept.pid, []]))
        sweep_abandoned()
        daemon.wait(timeout=40)
        assert not run.exists()
        assert not data.exists()
        assert is_running(kept.pid)  # its session is alive: not touched
        assert other.exists()
    finally:
        for process in (daemon, kept, live):
            process.kill()
            process.wait()
        subprocess.run(["rm", "-rf", str(run), str(data), str(other)], check=True)
