"""Load test: executions through ``runenv serve`` against the same environment in-process.

N executions at concurrency C, each a Python program whose output is checked, through a
``runenv serve`` process (sandbox environment) and then directly through a
``SandboxRunEnvironment`` in this process. Reports throughput, p50/p99 latency, lost or
wrong results, the server's memory before and after, and what was left behind. Writes the
"server" section of bench/RESULTS.md.

    python bench/bench_server.py [--runs 5000] [--concurrency 32]
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import anyio
import httpx

sys.path.insert(0, str(Path(__file__).parent))
from _results import write_section
from run_environments import SandboxRunEnvironment

CODE = "import sys\nn = int(sys.argv[1])\nprint(n * n)"
RUNENV = str(Path(sys.executable).with_name("runenv"))


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def live_sandbox_processes() -> int:
    """Processes running as the sandbox's uid that are alive (zombies are dead: bubblewrap
    leaves its namespace's dead processes to the host's init to reap)."""
    count = 0
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                stat = Path(entry.path, "stat").read_text()
                if os.stat(entry.path).st_uid == 65534 and stat.rsplit(")", 1)[1].split()[0] != "Z":
                    count += 1
            except OSError:
                pass
    return count


def settled() -> int:
    """Live sandbox processes once a killed namespace has had up to 5 s to go."""
    for _ in range(100):
        if not live_sandbox_processes():
            return 0
        time.sleep(0.05)
    return live_sandbox_processes()


async def drive(
    runs: int, concurrency: int, one: Callable[[int], Awaitable[str | None]]
) -> tuple[float, list[float], int]:
    """Run ``one(i)`` for every i with ``concurrency`` workers; returns wall time, latencies
    and how many results were lost or wrong."""
    latencies: list[float] = []
    bad = 0
    todo = iter(range(runs))

    async def worker() -> None:
        nonlocal bad
        for i in todo:
            start = time.perf_counter()
            out = await one(i)
            latencies.append(time.perf_counter() - start)
            bad += out != f"{i * i}\n"

    start = time.perf_counter()
    async with anyio.create_task_group() as tg:
        for _ in range(concurrency):
            tg.start_soon(worker)
    return time.perf_counter() - start, latencies, bad


def row(name: str, wall: float, latencies: list[float], bad: int, runs: int) -> str:
    q = statistics.quantiles(latencies, n=100)
    return f"| {name} | {runs / wall:.1f} | {q[49] * 1000:.1f} | {q[98] * 1000:.1f} | {bad} |"


async def through_server(base: str, runs: int, concurrency: int) -> tuple[float, list[float], int]:
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=base, timeout=120, limits=limits) as http:

        async def one(i: int) -> str | None:
            response = await http.post("/v1/execute", json={"code": CODE, "args": [str(i)]})
            return response.json()["stdout"] if response.status_code == 200 else None

        await drive(min(200, runs), concurrency, one)  # warm up before measuring memory
        return await drive(runs, concurrency, one)


async def in_process(tmp: str, runs: int, concurrency: int) -> tuple[float, list[float], int]:
    async with SandboxRunEnvironment(tmp_dir=tmp) as env:

        async def one(i: int) -> str | None:
            return (await env.execute(CODE, args=[str(i)])).stdout

        await drive(min(200, runs), concurrency, one)
        return await drive(runs, concurrency, one)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=5000)
    parser.add_argument("--concurrency", type=int, default=32)
    args = parser.parse_args()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    tmp = tempfile.mkdtemp(prefix="runenv-bench-", dir="/dev/shm")
    os.chmod(tmp, 0o755)
    env = {**os.environ, "RUNENV_TMPDIR": tmp}
    server = subprocess.Popen(
        [RUNENV, "serve", "--port", str(port), "--max-concurrency", str(args.concurrency),
         "--max-queue", str(4 * args.concurrency)],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(600):
            try:
                if httpx.get(f"{base}/healthz").status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.05)
        before = rss_mib(server.pid)
        wall, latencies, bad = anyio.run(through_server, base, args.runs, args.concurrency)
        after = rss_mib(server.pid)
    finally:
        server.terminate()
        server.wait(timeout=60)
    left_server = settled(), len(os.listdir(tmp))
    local_wall, local_latencies, local_bad = anyio.run(in_process, tmp, args.runs, args.concurrency)
    left_local = settled(), len(os.listdir(tmp))
    os.rmdir(tmp)
    print(f"server: {args.runs / wall:.1f}/s, bad {bad}, rss {before:.1f} -> {after:.1f} MiB, "
          f"left {left_server}; in-process: {args.runs / local_wall:.1f}/s, bad {local_bad}, "
          f"left {left_local}")  # fmt: skip
    body = (
        f"`python bench/bench_server.py --runs {args.runs} --concurrency {args.concurrency}`:\n"
        f"{args.runs} Python programs (`print(n * n)` for a different n each, every answer\n"
        f"checked) at concurrency {args.concurrency}, in the sandbox environment: through a\n"
        "`runenv serve` process (`POST /v1/execute`, one HTTP/1.1 connection per worker), then\n"
        "directly through `SandboxRunEnvironment` in the benchmark's own process. Each side\n"
        "first runs 200 unmeasured executions.\n\n"
        "| path | executions/s | p50 (ms) | p99 (ms) | lost or wrong |\n|---|---|---|---|---|\n"
        + row("HTTP server", wall, latencies, bad, args.runs)
        + "\n"
        + row("in-process", local_wall, local_latencies, local_bad, args.runs)
        + f"\n\nServer memory (RSS) after the warm-up: {before:.1f} MiB; after {args.runs} "
        f"executions: {after:.1f} MiB. Left behind after the server stopped: "
        f"{left_server[0]} live sandbox processes, {left_server[1]} workspace entries; after "
        f"the in-process run: {left_local[0]} processes, {left_local[1]} entries."
    )
    write_section("server", body)


if __name__ == "__main__":
    main()
