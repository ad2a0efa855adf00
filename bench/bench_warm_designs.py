"""Choosing the design of warm execution (issue 16) by numbers: the cost of one sandboxed
``pass`` in Python, back to back (no think time), side by side and alternating:

- bare: ``/usr/bin/python3 -c pass`` (the interpreter the sandbox sees);
- sandbox, back to back: ``SandboxRunEnvironment().execute("pass")`` as it is today, the
  next run arriving before the sandbox started ahead for it is ready;
- sandbox, a sandbox waiting: the same after a 50 ms pause (the next sandbox set up during
  it, outside the measurement);
- zygote prototype (zygote_prototype.py): one Python inside bubblewrap (the sandbox's
  mounts, user namespace and uid), its modules imported once; per run a fork into fresh
  mount, PID and IPC namespaces with a private /tmp and /workspace, capabilities dropped, no
  new privileges, the sandbox's seccomp filter, then the code, the namespace's processes
  all gone when it ends. Per-run cgroups and the workspace's files from the host are not in
  the prototype.

Writes the "warm designs" section of bench/RESULTS.md.

    python bench/bench_warm_designs.py [--runs 100]
"""

from __future__ import annotations

import argparse
import json
import shutil
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import anyio

sys.path.insert(0, str(Path(__file__).parent))
from _results import median_ms, write_section
from run_environments import SandboxRunEnvironment
from run_environments.environments.sandbox import bwrap, seccomp

PYTHON = "/usr/bin/python3"
PROTOTYPE = Path(__file__).with_name("zygote_prototype.py")


class Zygote:
    """The prototype in bubblewrap, driven over its pipes."""

    def __init__(self, directory: Path) -> None:
        bpf = directory / "filter.bpf"
        bpf.write_bytes(seccomp.compile_filter(False))
        static = bwrap.probe_static_arguments(shutil.which("bwrap"), False)
        drop = static.index("--cap-drop")
        del static[drop : drop + 2]  # the zygote keeps CAP_SYS_ADMIN in its user namespace
        argv = [
            *static, "--cap-add", "CAP_SYS_ADMIN", "--tmpfs", "/tmp", "--dir", "/workspace",
            "--ro-bind", str(PROTOTYPE), "/zygote.py", "--ro-bind", str(bpf), "/filter.bpf",
            "--", PYTHON, "/zygote.py", "/filter.bpf",
        ]  # fmt: skip
        self.process = subprocess.Popen(
            argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, bufsize=0
        )
        assert self.process.stdout is not None
        assert self.process.stdout.read(1) == b"R"

    def run(self, code: str, files: dict[str, str] | None = None) -> tuple[int, str]:
        assert self.process.stdin is not None
        assert self.process.stdout is not None
        body = json.dumps({"code": code, "files": files or {}}).encode()
        self.process.stdin.write(struct.pack(">I", len(body)) + body)
        status, size = struct.unpack(">II", self.process.stdout.read(8))
        return status, self.process.stdout.read(size).decode() if size else ""

    def close(self) -> None:
        assert self.process.stdin is not None
        self.process.stdin.close()
        self.process.wait(timeout=10)


def check_isolation(zygote: Zygote) -> None:
    """What the prototype must keep apart, checked before it is measured."""
    first = "import os; open('/tmp/left', 'w').write('x'); print(os.getuid(), os.getpid())"
    assert zygote.run(first) == (0, "65534 1\n")
    assert zygote.run("import os; print(os.listdir('/tmp'), os.listdir('.'))") == (0, "[] []\n")
    status, said = zygote.run("import ctypes; print(ctypes.CDLL(None).unshare(0x20000))")
    assert (status, said) == (0, "-1\n"), said  # no namespaces for the program
    assert zygote.run("import sys; sys.exit(3)")[0] == 3


async def measure(runs: int) -> dict[str, float]:
    samples: dict[str, list[float]] = {}

    def add(name: str, started: float) -> None:
        samples.setdefault(name, []).append(time.perf_counter() - started)

    with tempfile.TemporaryDirectory() as tmp:
        zygote = Zygote(Path(tmp))
        try:
            check_isolation(zygote)
            async with SandboxRunEnvironment() as sandbox:
                assert (await sandbox.execute("pass")).success
                for _ in range(runs):
                    start = time.perf_counter()
                    subprocess.run([PYTHON, "-c", "pass"], check=True)
                    add("bare python3 -c pass", start)
                    start = time.perf_counter()
                    assert (await sandbox.execute("pass")).success
                    add("sandbox, back to back", start)
                    await anyio.sleep(0.05)
                    start = time.perf_counter()
                    assert (await sandbox.execute("pass")).success
                    add("sandbox, a sandbox waiting", start)
                    start = time.perf_counter()
                    assert zygote.run("pass") == (0, "")
                    add("zygote prototype, back to back", start)
        finally:
            zygote.close()
    return {name: median_ms(values) for name, values in samples.items()}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=100)
    runs = parser.parse_args().runs
    figures = anyio.run(measure, runs)
    bare = figures["bare python3 -c pass"]
    rows = [f"| {name} | {ms:.1f} | {ms / bare:.2f}x |" for name, ms in figures.items()]
    body = (
        f'`execute("pass")` in Python, median of {runs} alternating runs, ms; the ratio is to'
        " a bare start of the same interpreter (issue 16's target: <= 0.2x back to back).\n\n"
        "| | ms | vs bare |\n|---|---:|---:|\n" + "\n".join(rows)
    )
    print(body)
    write_section("warm designs", body)


if __name__ == "__main__":
    main()
