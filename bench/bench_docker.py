"""The docker environment's cost per run, side by side with Docker's own command line and
the sandbox: ``python pass`` in each, alternating so that machine noise hits them alike.

- docker exec (CLI): ``docker exec <container> python3 -c pass`` into a running container;
- docker run (CLI): ``docker run --rm --network none <image> python3 -c pass``;
- docker long-lived: ``DockerRunEnvironment`` (an exec per run, a workspace and a user of
  its own, its processes killed after it);
- docker per run: ``DockerRunEnvironment(per_run=True)`` (a container per run, taken from
  the pool of started containers it keeps);
- docker per run, no pool: the same with ``pool=0`` (each container started on the run's
  critical path);
- podman long-lived / per run: the same two through Podman's Docker-compatible socket (a
  ``podman system service`` of the benchmark's own);
- sandbox: ``SandboxRunEnvironment``.

Between two measurements each environment finishes the work it does behind a run (removing
the run's files or container, refilling its pool: ``settle()``), outside every measurement,
as it does in the pauses of real use.

It starts a dockerd of its own when none answers (as the tests do) and uses the tests'
image. Writes the "docker" section of bench/RESULTS.md.

    python bench/bench_docker.py [--runs 30]
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
from tests.dockerd import built_image, daemon, load_into_podman, podman

from _results import median_ms, write_section
from run_environments import SandboxRunEnvironment
from run_environments.environments.docker import DockerRunEnvironment


async def measure(
    host: str, image: str, podman_host: str, podman_image: str, runs: int
) -> dict[str, float]:
    samples: dict[str, list[float]] = {
        "exec CLI": [], "run CLI": [], "long-lived": [], "per run": [], "per run, no pool": [],
        "podman long-lived": [], "podman per run": [], "sandbox": [],
    }  # fmt: skip
    env = {"DOCKER_HOST": host, "PATH": "/usr/bin:/bin:/usr/sbin:/sbin"}
    running = subprocess.run(
        ["docker", "run", "-d", "--rm", "--network", "none", image, "sleep", "infinity"],
        capture_output=True, text=True, check=True, env=env,
    ).stdout.strip()  # fmt: skip
    try:
        async with (
            DockerRunEnvironment(image, docker_host=host) as long_lived,
            DockerRunEnvironment(image, docker_host=host, per_run=True) as per_run,
            DockerRunEnvironment(image, docker_host=host, per_run=True, pool=0) as unpooled,
            DockerRunEnvironment(podman_image, docker_host=podman_host) as podman_long_lived,
            DockerRunEnvironment(podman_image, docker_host=podman_host, per_run=True) as pod_run,
            SandboxRunEnvironment() as sandbox,
        ):
            dockers = (long_lived, per_run, unpooled, podman_long_lived, pod_run)
            envs = {"long-lived": long_lived, "per run": per_run, "per run, no pool": unpooled,
                    "podman long-lived": podman_long_lived, "podman per run": pod_run,
                    "sandbox": sandbox}  # fmt: skip
            for each in envs.values():
                assert (await each.execute("pass")).success
            commands = {
                "exec CLI": ["docker", "exec", running, "python3", "-c", "pass"],
                "run CLI": ["docker", "run", "--rm", "--network", "none", image,
                            "python3", "-c", "pass"],
            }  # fmt: skip
            for _ in range(runs):
                for name, argv in commands.items():
                    for docker_env in dockers:
                        await docker_env.settle()
                    start = time.perf_counter()
                    subprocess.run(argv, capture_output=True, check=True, env=env)
                    samples[name].append(time.perf_counter() - start)
                for name, each in envs.items():
                    for docker_env in dockers:
                        await docker_env.settle()
                    start = time.perf_counter()
                    result = await each.execute("pass")
                    samples[name].append(time.perf_counter() - start)
                    assert result.success, result
    finally:
        subprocess.run(["docker", "rm", "-f", running], capture_output=True, env=env, check=False)
    return {name: median_ms(values) for name, values in samples.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=30)
    args = parser.parse_args()
    with daemon() as host, podman() as podman_host:
        image = built_image(host)
        podman_image = load_into_podman(podman_host, image)
        m = anyio.run(measure, host, image, podman_host, podman_image, args.runs)
    cli = m["exec CLI"]
    rows = "\n".join(f"| {name} | {value:.1f} | {value / cli:.2f} |" for name, value in m.items())
    print(", ".join(f"{name} {value:.1f} ms" for name, value in m.items()))
    body = (
        f"`python bench/bench_docker.py --runs {args.runs}`: median wall time of one run of\n"
        "`python3 -c pass` (the environments write the program to a workspace first and\n"
        "remove it after), alternating; each environment's work behind a run (removing it,\n"
        "refilling the pool) is finished between measurements, outside them.\n\n"
        "| how | ms | / docker exec (CLI) |\n|---|---|---|\n" + rows
    )
    write_section("docker", body)


if __name__ == "__main__":
    main()
