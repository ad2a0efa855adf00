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


def test_setup_says_what_it_installs_and_demo_skips_the_developer_tools(tmp_path: Path) -> None:
    """``scripts/setup --demo`` (what ``make demo`` runs) installs the run-time extras, not
    the developer tools, and says so as it goes. The virtual environment here is a stand-in
    whose python records what it is asked to install; the machine's tools are all there."""
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    record = tmp_path / "asked"
    fake = venv / "bin" / "python"
    fake.write_text(f'#!/bin/sh\necho "$@" >> {record}\n')
    fake.chmod(0o755)
    done = subprocess.run(["bash", str(ROOT / "scripts" / "setup"), "--demo"], cwd=ROOT,
                          env={**os.environ, "VENV": str(venv)}, capture_output=True,
                          text=True, timeout=300, check=False)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert f"setup: installing run-environments[all] into {venv}" in done.stderr
    assert done.stderr.rstrip().endswith("setup: ready")
    asked = [
        "-m pip install -q --disable-pip-version-check -e .[all]",
        "-m run_environments.environments.wasm install",  # the wasm environment's packages
    ]
    assert record.read_text().splitlines() == asked
    make = subprocess.run(["make", "-n", "demo"], cwd=ROOT, capture_output=True, text=True,
                          timeout=60, check=False)  # fmt: skip
    assert "scripts/setup --demo" in make.stdout
