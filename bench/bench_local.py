"""Start-up overhead of the local environment against spawning the same interpreter bare.

Both sides run the same program file with the same interpreter and capture its output;
runs alternate so that machine noise hits both alike. Writes the "local" section of
bench/RESULTS.md.

    python bench/bench_local.py [--runs 300]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import anyio

sys.path.insert(0, str(Path(__file__).parent))
from _results import median_ms, write_section
from run_environments import LocalRunEnvironment
from run_environments._process import run_process

TARGET = 1.10
CASES = {"python": (sys.executable, "pass\n", ".py"), "bash": (shutil.which("bash"), ":\n", ".sh")}


async def measure(language: str, runs: int) -> tuple[float, float, float]:
    interpreter, code, suffix = CASES[language]
    assert interpreter, f"{language} is not installed"
    bare: list[float] = []
    supervised: list[float] = []
    ours: list[float] = []
    environ = dict(os.environb)
    with tempfile.TemporaryDirectory() as tmp:
        program = Path(tmp, f"main{suffix}")
        program.write_text(code)
        async with LocalRunEnvironment() as env:
            await env.execute(code, language=language)  # resolve the toolchain once
            for _ in range(runs):
                start = time.perf_counter()
                subprocess.run([interpreter, str(program)], capture_output=True, check=True)
                bare.append(time.perf_counter() - start)
                start = time.perf_counter()
                await run_process(
                    [interpreter, str(program)], cwd=tmp, env=environ, timeout=60,
                    max_output_bytes=1 << 20,
                )  # fmt: skip
                supervised.append(time.perf_counter() - start)
                start = time.perf_counter()
                result = await env.execute(code, language=language)
                ours.append(time.perf_counter() - start)
                assert result.success, result
    return median_ms(bare), median_ms(supervised), median_ms(ours)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=300)
    args = parser.parse_args()
    rows = []
    for language in CASES:
        bare, supervised, ours = anyio.run(measure, language, args.runs)
        ratio = ours / bare
        verdict = "met" if ratio <= TARGET else "missed"
        rows.append(
            f"| {language} | {bare:.2f} | {supervised:.2f} ({supervised / bare:.3f}) "
            f"| {ours:.2f} | **{ratio:.3f}** | {verdict} |"
        )
        print(
            f"{language}: bare {bare:.2f} ms, supervision only {supervised:.2f} ms, "
            f"local {ours:.2f} ms, local/bare {ratio:.3f}"
        )
    body = (
        f"`python bench/bench_local.py --runs {args.runs}`: median wall time of one run of an\n"
        "empty program (`pass`, `:`), the bare interpreter started with `subprocess.run`\n"
        "(output captured) against `LocalRunEnvironment.execute` (workspace, code file,\n"
        'supervision, cleanup), alternating. "supervision only" is the process supervisor\n'
        "alone on the same file (no workspace, no options), to show where the cost lies.\n\n"
        "| language | bare (ms) | supervision only (ms, ratio) | local (ms) | local / bare "
        "| target <= 1.10 |\n|---|---|---|---|---|---|\n" + "\n".join(rows)
    )
    write_section("local", body)


if __name__ == "__main__":
    main()
