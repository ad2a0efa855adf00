"""Start-up cost of the sandbox against the bare interpreter and the local environment.

All run the same empty program with the same interpreter (the system's python3, which is
what the sandbox sees), alternating so that machine noise hits them alike:

- bare: ``subprocess.run`` of the interpreter;
- local: ``LocalRunEnvironment``;
- sandbox: ``SandboxRunEnvironment`` as configured by default, which sets up the sandbox
  for the next run of the same shape after each run. Each iteration ends with a pause of
  ``--pause`` ms (an agent's think time; the next sandbox is set up then, outside every
  measurement);
- sandbox cold: ``SandboxRunEnvironment(prestart=False)``: bubblewrap's whole set-up on
  the critical path of every run.

Writes the "sandbox" section of bench/RESULTS.md.

    python bench/bench_sandbox.py [--runs 200] [--pause 30]
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import anyio

sys.path.insert(0, str(Path(__file__).parent))
from _results import median_ms, write_section
from run_environments import LocalRunEnvironment, SandboxRunEnvironment

TARGET = 1.5
CASES = {"python": ("/usr/bin/python3", "pass\n", ".py"), "bash": ("/usr/bin/bash", ":\n", ".sh")}


async def measure(language: str, runs: int, pause: float) -> dict[str, float]:
    interpreter, code, suffix = CASES[language]
    samples: dict[str, list[float]] = {"bare": [], "local": [], "sandbox": [], "cold": []}
    with tempfile.TemporaryDirectory() as tmp:
        program = Path(tmp, f"main{suffix}")
        program.write_text(code)
        async with (
            LocalRunEnvironment(python=CASES["python"][0]) as local,
            SandboxRunEnvironment() as sandbox,
            SandboxRunEnvironment(prestart=False) as cold,
        ):
            envs = {"local": local, "sandbox": sandbox, "cold": cold}
            for env in envs.values():  # resolve toolchains, probe the sandbox
                assert (await env.execute(code, language=language)).success
            for _ in range(runs):
                await anyio.sleep(pause)
                start = time.perf_counter()
                subprocess.run([interpreter, str(program)], capture_output=True, check=True)
                samples["bare"].append(time.perf_counter() - start)
                for name, env in envs.items():
                    start = time.perf_counter()
                    result = await env.execute(code, language=language)
                    samples[name].append(time.perf_counter() - start)
                    assert result.success, result
    return {name: median_ms(values) for name, values in samples.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--pause", type=float, default=30, help="ms between iterations")
    args = parser.parse_args()
    assert shutil.which("bwrap"), "bubblewrap is not installed"
    rows = []
    for language in CASES:
        m = anyio.run(measure, language, args.runs, args.pause / 1000)
        ratio = m["sandbox"] / m["bare"]
        verdict = ("met" if ratio <= TARGET else "missed") if language == "python" else "-"
        rows.append(
            f"| {language} | {m['bare']:.2f} | {m['local']:.2f} ({m['local'] / m['bare']:.2f}) "
            f"| {m['sandbox']:.2f} | **{ratio:.2f}** | {m['cold']:.2f} "
            f"({m['cold'] / m['bare']:.2f}) | {verdict} |"
        )
        print(
            f"{language}: bare {m['bare']:.2f} ms, local {m['local']:.2f} ms, sandbox "
            f"{m['sandbox']:.2f} ms ({ratio:.2f}), sandbox cold {m['cold']:.2f} ms"
        )
    body = (
        f"`python bench/bench_sandbox.py --runs {args.runs} --pause {args.pause:g}`: median\n"
        "wall time of one run of an empty program with the system interpreter\n"
        "(`/usr/bin/python3`, `/usr/bin/bash`). The sandbox is bubblewrap with user, PID,\n"
        "mount, IPC, UTS, cgroup and network namespaces, seccomp, a cgroup per run, prlimit\n"
        'and a fresh workspace. "sandbox" is the default configuration, which sets up the\n'
        "next run's sandbox after each run (during the pause between iterations, outside\n"
        'every measurement); "cold" (`prestart=False`) sets up every sandbox on the\n'
        "critical path.\n\n"
        "| language | bare (ms) | local (ms, / bare) | sandbox (ms) | sandbox / bare "
        "| sandbox cold (ms, / bare) | target sandbox / bare <= 1.5 |\n"
        "|---|---|---|---|---|---|---|\n" + "\n".join(rows)
    )
    write_section("sandbox", body)


if __name__ == "__main__":
    main()
