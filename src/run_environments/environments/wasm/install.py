"""Where the wasm environment's interpreters live: Node.js, the npm packages (Pyodide,
QuickJS) pinned by the package.json and package-lock.json beside this module, and Pyodide's
memory snapshot, made once per version and reused by every interpreter started after.

The packages go to ``$RUNENV_WASM_DIR`` (default ``~/.cache/run-environments/wasm``), one
directory per lock file, installed under a lock so that concurrent installs make it once:
``python -m run_environments.environments.wasm install`` (``scripts/setup`` runs it).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

from ..._errors import EnvironmentUnavailableError

HERE = Path(__file__).parent
RUNNER = HERE / "runner.mjs"
PACKAGES = {"python": "pyodide", "javascript": "quickjs-emscripten"}
"""Each language and the npm package that runs it."""
NODE_MAJOR = 20
"""The oldest Node.js whose permission model the runner relies on."""


def home() -> Path:
    """The directory for the packages and snapshots."""
    if configured := os.environ.get("RUNENV_WASM_DIR"):
        return Path(configured)
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(cache) / "run-environments" / "wasm"


def _digest(*paths: Path) -> str:
    sha = hashlib.sha256()
    for path in paths:
        sha.update(path.read_bytes())
    return sha.hexdigest()[:16]


def modules() -> Path:
    """The ``node_modules`` directory of the pinned packages (it may not exist yet)."""
    lock = HERE / "package-lock.json"
    return home() / f"npm-{_digest(HERE / 'package.json', lock)}" / "node_modules"


def node() -> tuple[str | None, str | None]:
    """Node.js's path and version, or None and why it cannot serve."""
    path = shutil.which("node")
    if path is None:
        return None, "node not found; install Node.js 20 or later (apt-get install nodejs)"
    try:
        version = subprocess.run(
            [path, "--version"], capture_output=True, text=True, timeout=30, check=True
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError) as exc:
        return None, f"{path} --version failed: {exc}"
    if int(version.lstrip("v").split(".")[0]) < NODE_MAJOR:
        return None, f"Node.js {version} is too old: the wasm environment needs {NODE_MAJOR}+"
    return path, version


def missing(language: str) -> str | None:
    """Why ``language``'s package is not installed, or None when it is."""
    package = modules() / PACKAGES[language] / "package.json"
    if package.is_file():
        return None
    return (
        f"{PACKAGES[language]} (npm) is not installed in {modules().parent}; "
        "run: python -m run_environments.environments.wasm install"
    )


def version(package: str) -> str:
    """The installed version of an npm package."""
    return str(json.loads((modules() / package / "package.json").read_text())["version"])


@contextlib.contextmanager
def _locked(name: str) -> Iterator[None]:
    home().mkdir(parents=True, exist_ok=True)
    with open(home() / f".{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # dropped when this process ends, however it ends
        yield


def install(npm: str = "npm") -> Path:
    """Install the pinned packages (``npm ci``, no install scripts) unless they are there.

    :returns: the ``node_modules`` directory.
    :raises subprocess.CalledProcessError: when npm fails (its output is in the error).
    """
    target = modules()
    with _locked("install"):
        if target.is_dir():
            return target
        staging = Path(tempfile.mkdtemp(prefix=".npm-", dir=home()))
        try:
            for name in ("package.json", "package-lock.json"):
                shutil.copy(HERE / name, staging / name)
            subprocess.run(
                [npm, "ci", "--no-audit", "--no-fund", "--ignore-scripts", "--omit=dev"],
                cwd=staging, check=True, capture_output=True, text=True, timeout=900,
            )  # fmt: skip
            os.rename(staging, target.parent)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return target


def snapshot(node_path: str, flags: list[str]) -> Path:
    """Pyodide's memory snapshot with the guest driver loaded (made on first use, in about
    three seconds; a restore takes a tenth of that).

    :raises EnvironmentUnavailableError: when Node.js could not make it (its output is in
        the message).
    """
    key = _digest(RUNNER, HERE / "guest.py")
    path = home() / f"pyodide-{version('pyodide')}-{key}.snapshot"
    with _locked("snapshot"):
        if path.is_file():
            return path
        argv = [
            node_path, *flags, f"--allow-fs-write={home()}/*", f"--allow-fs-read={home()}/*",
            str(RUNNER), "python", str(modules()), str(path), "--make-snapshot",
        ]  # fmt: skip
        clean = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LANG": "C.UTF-8"}
        done = subprocess.run(argv, capture_output=True, text=True, timeout=300, env=clean)
        if done.returncode != 0 or not path.is_file():
            raise EnvironmentUnavailableError(
                f"making Pyodide's snapshot failed: {done.stderr[-2000:]}"
            )
    return path
