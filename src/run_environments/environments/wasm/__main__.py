"""``python -m run_environments.environments.wasm install``: install the wasm environment's
npm packages (Pyodide, QuickJS) where it looks for them."""

from __future__ import annotations

import subprocess
import sys

from . import install


def main(argv: list[str]) -> int:
    if argv != ["install"]:
        sys.stderr.write("usage: python -m run_environments.environments.wasm install\n")
        return 2
    try:
        path = install.install()
    except (OSError, subprocess.CalledProcessError) as exc:
        output = getattr(exc, "stderr", "") or ""
        sys.stderr.write(f"installing the wasm packages failed: {exc}\n{output}\n")
        return 1
    sys.stdout.write(f"{path}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
