"""The README's main job: the demo runs the examples in every ready environment."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_demo_runs_in_every_ready_environment() -> None:
    env = {**os.environ, "COLUMNS": "200", "E2B_API_KEY": ""}
    done = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "demo.py")],
        capture_output=True, text=True, timeout=300, env=env, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    for name in ("local", "sandbox"):
        assert f"environment: {name}" in done.stdout
    assert done.stdout.count("Hello from Python") == 2
    assert done.stdout.count("timed out after 1 s") == 2
    assert "e2b: not ready" in done.stdout and "remote: not ready" in done.stdout
