"""The ssh environment's cost per run, side by side with OpenSSH's own client, alternating
so that machine noise hits them alike, against an sshd of the benchmark's own on 127.0.0.1
(the tests' server and user):

- ssh true (new connection): ``ssh host true``, a connection and a login each time;
- ssh true (shared connection): the same through a ControlMaster connection that stays
  open, as the environment keeps its own: a channel and the remote shell, nothing more;
- ssh python3 -c pass (shared connection): a bare interpreter start over SSH;
- ssh environment: ``SSHRunEnvironment().execute("pass")`` unsandboxed: a directory made
  with its watchdog, the program written over SFTP, run through the wrapper, its leftovers
  killed and its directory removed;
- ssh environment, sandboxed: the same in bubblewrap on the remote;
- sandbox (local): ``SandboxRunEnvironment`` on this machine, for scale.

Writes the "ssh" section of bench/RESULTS.md.

    python bench/bench_ssh.py [--runs 30]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

import anyio

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).parents[1]))
from tests.sshd import Server, User, session_user, workdir

from _results import median_ms, write_section
from run_environments import SandboxRunEnvironment
from run_environments.environments.ssh import SSHRunEnvironment


async def measure(server: Server, user: User, known: Path, runs: int) -> dict[str, float]:
    base = ["ssh", "-F", "/dev/null", "-i", str(user.key), "-p", str(server.port),
            "-o", f"UserKnownHostsFile={known}", "-o", "BatchMode=yes"]  # fmt: skip
    control = known.parent / "control"
    shared = [*base, "-o", f"ControlPath={control}", "-o", "ControlMaster=auto",
              "-o", "ControlPersist=600"]  # fmt: skip
    target = f"{user.name}@127.0.0.1"
    commands = {
        "ssh true (new connection)": [*base, target, "true"],
        "ssh true (shared connection)": [*shared, target, "true"],
        "ssh python3 -c pass (shared connection)": [*shared, target, "python3 -c pass"],
    }
    samples: dict[str, list[float]] = {name: [] for name in commands}
    subprocess.run(commands["ssh true (shared connection)"], check=True)  # opens the master
    where = f"{target}:{server.port}"
    try:
        async with (
            SSHRunEnvironment(where, key_file=str(user.key), known_hosts=str(known),
                              sandbox=False) as unsandboxed,
            SSHRunEnvironment(where, key_file=str(user.key), known_hosts=str(known),
                              sandbox=True) as sandboxed,
            SandboxRunEnvironment() as sandbox,
        ):  # fmt: skip
            envs = {"ssh environment": unsandboxed, "ssh environment, sandboxed": sandboxed,
                    "sandbox (local)": sandbox}  # fmt: skip
            samples.update({name: [] for name in envs})
            for each in envs.values():
                assert (await each.execute("pass")).success
            for _ in range(runs):
                for name, argv in commands.items():
                    start = time.perf_counter()
                    subprocess.run(argv, check=True, capture_output=True)
                    samples[name].append(time.perf_counter() - start)
                for name, env in envs.items():
                    start = time.perf_counter()
                    result = await env.execute("pass")
                    samples[name].append(time.perf_counter() - start)
                    assert result.success, result
    finally:
        subprocess.run([*shared, "-O", "exit", target], capture_output=True, check=False)
    return {name: median_ms(values) for name, values in samples.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=30)
    args = parser.parse_args()
    with workdir() as directory, session_user(directory) as user, Server(user, directory) as sshd:
        known = directory / "known_hosts"
        known.write_text(sshd.known_hosts_line())
        m = anyio.run(measure, sshd, user, known, args.runs)
    bare = m["ssh true (shared connection)"]
    rows = "\n".join(f"| {name} | {value:.1f} | {value / bare:.2f} |" for name, value in m.items())
    print(", ".join(f"{name} {value:.1f} ms" for name, value in m.items()))
    body = (
        f"`python bench/bench_ssh.py --runs {args.runs}`: median wall time of one run,\n"
        "alternating, against OpenSSH's sshd on 127.0.0.1 (the remote user's shell is\n"
        "/bin/sh). The environments run `python3 -c pass` with a workspace made and\n"
        "removed on the remote each time; `ssh` is OpenSSH's client.\n\n"
        "| how | ms | / ssh true (shared connection) |\n|---|---|---|\n" + rows
    )
    write_section("ssh", body)


if __name__ == "__main__":
    main()
