"""The Docker environment, against a real Docker daemon (started by the tests when none
runs) and an image built here from Debian's packages, in both lifecycles."""

from __future__ import annotations

import hashlib
import pathlib
import re
import subprocess
import sys
from collections.abc import AsyncIterator

import anyio
import docker
import pytest

from run_environments import (
    EnvironmentUnavailableError,
    LanguageUnavailableError,
    Limits,
    RunEnvironment,
)
from run_environments.environments.docker import LABEL, OWNER, DockerRunEnvironment
from run_environments.images import TEST_LANGUAGES
from run_environments.testing import EnvironmentBehaviour
from tests.dockerd import SocketProxy

pytestmark = pytest.mark.anyio


LISTING = (
    "for p in /proc/[0-9]*; do c=$(tr '\\0' ' ' < $p/cmdline 2>/dev/null);"
    ' case "$c" in "/sbin/docker-init "*|"/run/podman-init "*|"sleep infinity "|'
    '"sh -c for p in"*|"tr "*|"") ;;'
    ' *) echo "process $c";; esac;'
    ' done; for f in /workspace/*; do [ -e "$f" ] && echo "workspace $f"; done; true'
)


class DockerBehaviour(EnvironmentBehaviour):
    languages = TEST_LANGUAGES
    per_run = False
    daemon = "docker"  # or "podman": its Docker-compatible socket

    @pytest.fixture
    async def env(self, request: pytest.FixtureRequest) -> AsyncIterator[DockerRunEnvironment]:
        prefix = "" if self.daemon == "docker" else "podman_"
        host = request.getfixturevalue(f"{self.daemon}_host")
        image = request.getfixturevalue(f"{prefix}image")
        self.client = request.getfixturevalue(f"{self.daemon}_client")
        env = DockerRunEnvironment(image, per_run=self.per_run, docker_host=host)
        try:
            yield env
        finally:
            await env.cleanup()
        assert await self.leftovers(env) == []
        assert self.labelled(env) == []

    def labelled(self, env: DockerRunEnvironment) -> list[str]:
        found = self.client.containers.list(all=True, filters={"label": f"{LABEL}={env.instance}"})
        return [f"container {c.short_id}" for c in found]

    async def leftovers(self, env: RunEnvironment) -> list[str]:
        assert isinstance(env, DockerRunEnvironment)
        await env.settle()  # what finished runs left is removed behind them
        serving = {env.shared_container_id, *env.waiting_container_ids}
        left = []
        for container in self.client.containers.list(
            all=True, filters={"label": f"{LABEL}={env.instance}"}
        ):
            if container.id in serving and container.status == "running":
                output = container.exec_run(["sh", "-c", LISTING], user="0").output
                left += [line for line in output.decode().splitlines() if line]
            else:
                left.append(f"container {container.short_id}")
        return left


class TestDockerLongLived(DockerBehaviour):
    per_run = False


class TestDockerPerRun(DockerBehaviour):
    per_run = True


class TestPodmanLongLived(DockerBehaviour):
    daemon = "podman"


class TestPodmanPerRun(DockerBehaviour):
    daemon = "podman"
    per_run = True


@pytest.fixture
async def long_lived(docker_host: str, image: str) -> AsyncIterator[DockerRunEnvironment]:
    env = DockerRunEnvironment(image, docker_host=docker_host, limits=Limits(memory=128 << 20,
                               processes=64, disk=32 << 20))  # fmt: skip
    try:
        yield env
    finally:
        await env.cleanup()


@pytest.mark.parametrize("per_run", [False, True])
async def test_containers_are_hardened(
    docker_host: str, image: str, docker_client: docker.DockerClient, per_run: bool
) -> None:
    env = DockerRunEnvironment(image, per_run=per_run, docker_host=docker_host,
                               limits=Limits(memory=128 << 20, processes=64))  # fmt: skip
    seen: list[dict] = []

    async def inspect(_: str) -> None:
        for container in docker_client.containers.list(
            filters={"label": f"{LABEL}={env.instance}"}
        ):
            seen.append(container.attrs)

    try:
        result = await env.execute("print('up', flush=True)", on_stdout=inspect)
    finally:
        await env.cleanup()
    assert result.success, result
    assert seen, "no container of the environment was running during the run"
    host, config = seen[0]["HostConfig"], seen[0]["Config"]
    assert host["NetworkMode"] == "none"
    assert host["CapDrop"] == ["ALL"] and not host["CapAdd"]
    assert "no-new-privileges" in host["SecurityOpt"]
    assert host["ReadonlyRootfs"] is True and host["Privileged"] is False
    assert set(host["Tmpfs"]) == {"/tmp", "/workspace"}
    assert host["Memory"] == 128 << 20 and host["MemorySwap"] == 128 << 20
    assert host["PidsLimit"] == 64 and host["Init"] is True
    assert config["User"] == "65534:65534"


async def test_a_run_cannot_reach_the_network_or_become_root(long_lived) -> None:
    code = (
        "import os, socket\n"
        "print(sorted(os.listdir('/sys/class/net')))\n"
        "try:\n    socket.create_connection(('192.0.2.1', 80), timeout=2)\n"
        "except OSError as exc:\n    print('no route:', type(exc).__name__)\n"
        "caps = open('/proc/self/status').read().count('CapEff:\\t0000000000000000')\n"
        "print(os.getuid() != 0, caps)\n"
        "try:\n    open('/etc/owned', 'w')\n"
        "except OSError as exc:\n    print('read-only:', exc.errno)\n"
    )  # fmt: skip
    result = await long_lived.execute(code)
    assert result.stdout.splitlines() == [
        "['lo']", "no route: OSError", "True 1", "read-only: 30"
    ], result  # fmt: skip


async def test_a_daemon_a_run_leaves_is_killed_with_its_run(long_lived, docker_client) -> None:
    code = (
        "import os, signal, time\n"
        "if os.fork() == 0:\n    os.setsid()\n    if os.fork() == 0:\n"
        "        signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
        "        while True: time.sleep(0.1)\n    os._exit(0)\n"
        "print('left a daemon')\n"
    )
    result = await long_lived.execute(code)
    assert result.success and result.stdout == "left a daemon\n", result
    container = docker_client.containers.get(long_lived.shared_container_id)
    output = container.exec_run(["sh", "-c", LISTING], user="0").output.decode()
    processes = [line for line in output.splitlines() if line.startswith("process")]
    assert processes == [], output  # killed before the result came back
    await long_lived.settle()
    output = container.exec_run(["sh", "-c", LISTING], user="0").output.decode()
    assert output == "", output  # and its workspace removed behind it


async def test_memory_past_the_limit_is_oom_killed(long_lived) -> None:
    result = await long_lived.execute("x = bytearray(400 << 20)\nprint('allocated')")
    assert not result.success
    assert result.oom_killed and result.signal == "SIGKILL", result
    assert "allocated" not in result.stdout
    after = await long_lived.execute("print('the container lives on')")
    assert after.stdout == "the container lives on\n"


async def test_the_process_limit_holds(long_lived) -> None:
    code = (
        "import os, time\nn = 0\ntry:\n    for _ in range(200):\n"
        "        if os.fork() == 0:\n            time.sleep(5)\n            os._exit(0)\n"
        "        n += 1\nexcept OSError:\n    print('refused after', n < 64)\n"
    )
    result = await long_lived.execute(code, timeout=20)
    assert "refused after True" in result.stdout, result


async def test_containers_of_a_dead_owner_are_swept(
    docker_host: str, image: str, docker_client: docker.DockerClient
) -> None:
    orphan = docker_client.containers.run(
        image, ["sleep", "infinity"], detach=True, network_mode="none",
        labels={LABEL: "deadbeef0000", OWNER: "999999999:1"},
    )  # fmt: skip
    env = DockerRunEnvironment(image, docker_host=docker_host)
    try:
        assert (await env.execute("print(1)")).stdout == "1\n"
    finally:
        await env.cleanup()
    with pytest.raises(docker.errors.NotFound):
        docker_client.containers.get(orphan.id)


async def test_a_daemon_that_is_not_there_is_a_precise_error(tmp_path) -> None:
    env = DockerRunEnvironment(docker_host=f"unix://{tmp_path}/no.sock")
    with pytest.raises(EnvironmentUnavailableError, match="not running at unix://"):
        await env.execute("print(1)")
    status = await env.status()
    assert not status.ready and "not running" in (status.reason or "")


async def test_a_missing_image_says_how_to_build_it(docker_host: str) -> None:
    env = DockerRunEnvironment("runenv-nothing:here", docker_host=docker_host)
    try:
        with pytest.raises(EnvironmentUnavailableError, match="runenv images build"):
            await env.execute("print(1)")
        assert "runenv images build" in ((await env.status()).reason or "")
    finally:
        await env.cleanup()


async def test_a_language_the_image_lacks_says_what_to_install(long_lived) -> None:
    with pytest.raises(LanguageUnavailableError, match="ruby"):
        await long_lived.execute("puts 1", language="ruby")


async def test_per_run_containers_come_from_a_pool_of_started_ones(
    docker_host: str, image: str, docker_client: docker.DockerClient
) -> None:
    env = DockerRunEnvironment(image, per_run=True, pool=2, docker_host=docker_host)
    hostname = "import socket\nprint(socket.gethostname())"
    try:
        first = (await env.execute(hostname)).stdout.strip()
        await env.settle()
        waiting = env.waiting_container_ids
        assert len(waiting) == 2 and not any(w.startswith(first) for w in waiting)
        second = (await env.execute(hostname)).stdout.strip()
        assert [w for w in waiting if w.startswith(second)], (second, waiting)
        await env.settle()
        assert len(env.waiting_container_ids) == 2  # refilled
        for used in (first, second):  # removed whole after their run
            assert docker_client.containers.list(all=True, filters={"id": used}) == []
    finally:
        await env.cleanup()
    assert (
        docker_client.containers.list(all=True, filters={"label": f"{LABEL}={env.instance}"}) == []
    )


async def test_a_run_s_own_limits_hold_in_the_long_lived_container(long_lived) -> None:
    cpu = await long_lived.execute("while True: pass", limits=Limits(cpu_time=1), timeout=20)
    assert cpu.signal == "SIGXCPU" and not cpu.timed_out, cpu
    assert cpu.error == "exceeded its CPU time limit (SIGXCPU)"
    files = await long_lived.execute(
        "import os\nfs = []\ntry:\n    while True: fs.append(os.open('/dev/null', 0))\n"
        "except OSError as exc:\n    print(exc.errno, len(fs) < 16)",
        limits=Limits(open_files=16),
    )
    assert files.stdout == "24 True\n", files
    forks = await long_lived.execute(
        "import os, time\nn = 0\ntry:\n    for _ in range(50):\n"
        "        if os.fork() == 0:\n            time.sleep(5)\n            os._exit(0)\n"
        "        n += 1\nexcept OSError:\n    print('refused after', n)\n",
        limits=Limits(processes=8),
        timeout=20,
    )
    assert forks.stdout.startswith("refused after") and int(forks.stdout.split()[-1]) < 8, forks
    big = await long_lived.execute(
        "open('big', 'wb').write(b'x' * (4 << 20))", limits=Limits(disk=1 << 20)
    )
    # a container of its own with a 1 MiB /workspace: full (or, where the file size rlimit
    # comes first, too large: Python ignores SIGXFSZ)
    assert re.search(r"OSError: \[Errno 2[78]\]", big.stderr), big


async def test_a_run_s_own_memory_limit_gets_a_container_of_its_own(
    long_lived, docker_client
) -> None:
    allocate = "x = bytearray(80 << 20)\nprint('allocated')"
    small = await long_lived.execute(allocate, limits=Limits(memory=48 << 20))
    assert small.oom_killed and "allocated" not in small.stdout, small
    fits = await long_lived.execute(allocate)  # the environment's 128 MiB
    assert fits.stdout == "allocated\n", fits
    await long_lived.settle()
    labelled = docker_client.containers.list(
        all=True, filters={"label": f"{LABEL}={long_lived.instance}"}
    )
    assert [c.id for c in labelled] == [long_lived.shared_container_id]


async def test_files_past_what_an_exec_carries_go_in_and_out_whole(long_lived) -> None:
    blob = bytes(range(256)) * 1200 + b"\0\r\n\xff"  # ~300 KiB, past the inline bound
    small = b"\0 small \xff"
    result = await long_lived.execute(
        "import hashlib\nfor n in ('blob', 'sub/small'):\n"
        "    print(n, hashlib.sha256(open(n, 'rb').read()).hexdigest())\n"
        "open('out.bin', 'wb').write(open('blob', 'rb').read()[::-1])",
        files={"blob": blob, "sub/small": small},
        fetch_files=["out.bin", "absent"],
    )
    assert result.success, result
    assert result.stdout.splitlines() == [
        f"blob {hashlib.sha256(blob).hexdigest()}",
        f"sub/small {hashlib.sha256(small).hexdigest()}",
    ]
    assert result.files == {"out.bin": blob[::-1]} and result.missing_files == ("absent",)


@pytest.mark.parametrize("size", [20 << 10, 100 << 10])  # carried by the run's exec; not
async def test_files_that_do_not_fit_are_a_precise_error(long_lived, size: int) -> None:
    with pytest.raises(EnvironmentUnavailableError, match=r"files could not be written.*space"):
        await long_lived.execute("print(1)", files={"a": b"x" * size},
                                 limits=Limits(disk=16 << 10))  # fmt: skip
    assert (await long_lived.execute("print(1)")).stdout == "1\n"


async def test_a_container_that_died_is_a_precise_error_then_replaced(
    long_lived, docker_client
) -> None:
    assert (await long_lived.execute("print(1)")).success
    first = long_lived.shared_container_id
    docker_client.containers.get(first).kill()
    with pytest.raises(EnvironmentUnavailableError, match="not running any more"):
        await long_lived.execute("print(2)")
    assert (await long_lived.execute("print(3)")).stdout == "3\n"
    assert long_lived.shared_container_id not in (None, first)


async def test_the_daemon_gone_mid_run_is_a_precise_error(
    docker_host: str, image: str, docker_client: docker.DockerClient, tmp_path
) -> None:
    if not docker_host.startswith("unix://"):
        pytest.skip("the daemon is not on a Unix socket here")
    proxy = SocketProxy(docker_host, tmp_path / "docker.sock")
    env = DockerRunEnvironment(image, docker_host=proxy.address)
    with proxy:
        try:
            assert (await env.execute("print(1)")).stdout == "1\n"
            await env.settle()  # its removal done: the daemon goes under the next run alone

            async def daemon_goes(_: str) -> None:
                proxy.stop()

            with pytest.raises(EnvironmentUnavailableError, match="not running at unix://"):
                await env.execute(
                    "import time\nprint('up', flush=True)\ntime.sleep(60)",
                    on_stdout=daemon_goes, timeout=30,
                )  # fmt: skip
        finally:
            proxy.start()  # back: cleanup removes what the run left in it
            await env.cleanup()
    assert (
        docker_client.containers.list(all=True, filters={"label": f"{LABEL}={env.instance}"}) == []
    )


def test_a_socket_without_permission_says_so(
    docker_host: str, image: str, tmp_path: pathlib.Path
) -> None:
    """As a user the socket does not let in: root without its capability to override file
    permissions, against a socket of mode 000 that leads to the real daemon."""
    with SocketProxy(docker_host, tmp_path / "docker.sock") as proxy:
        (tmp_path / "docker.sock").chmod(0)
        program = (
            "import anyio\nfrom run_environments.environments.docker import DockerRunEnvironment\n"
            f"env = DockerRunEnvironment({image!r}, docker_host={proxy.address!r})\n"
            "status = anyio.run(env.status)\nprint(status.ready, status.reason)\n"
        )
        done = subprocess.run(
            ["setpriv", "--bounding-set=-dac_override,-dac_read_search", "--",
             sys.executable, "-c", program],
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
    assert done.stdout.startswith(
        f"False permission denied on the Docker socket {proxy.address}: run as a member of"
        " the docker group"
    ), done


async def test_a_run_cannot_read_another_s_files_or_code_while_both_run(long_lived) -> None:
    """Runs at the same time in the long-lived container: one's workspace, its code and the
    files its exec carried are not readable by the other, in the file system or in /proc."""
    secret = "s3cr3t-" + "x" * 20
    holder = f"import time\nprint('holding', flush=True)\ntime.sleep(8)\n# {secret}\n"
    snoop = (  # the secret is made at run time: this code does not hold it
        "import base64, glob, os\nsecret = ('s3cr3t-' + 'x' * 20).encode()\nfound = []\n"
        "mine = f'/proc/{os.getpid()}/'\n"
        "for path in glob.glob('/proc/[0-9]*/*') + glob.glob('/workspace/**', recursive=True)"
        " + glob.glob('/tmp/**', recursive=True):\n"
        "    try:\n        data = open(path, 'rb').read()\n    except OSError:\n        continue\n"
        "    for token in [data] + data.replace(b'\\0', b' ').split():\n"
        "        try:\n            token = base64.b64decode(token, validate=True)\n"
        "        except ValueError:\n            pass\n"
        "        if secret in token and not path.startswith(mine):\n"
        "            found.append(path)\n"
        "print('found', found)\n"
    )
    started = anyio.Event()

    async def hold() -> None:
        result = await long_lived.execute(
            holder, files={"data.txt": secret}, on_stdout=lambda _: started.set(), timeout=20
        )
        assert result.success, result

    async with anyio.create_task_group() as tasks:
        tasks.start_soon(hold)
        await started.wait()
        seen = await long_lived.execute(snoop, timeout=20)
    assert seen.stdout == "found []\n", seen


async def test_a_hundred_runs_at_once_lose_nothing(long_lived) -> None:
    """More runs at once than the SDK's default connection pools (25 pools, one per URL, of
    10 connections each) would serve: every answer comes back, and right. (Requests lost to
    a pool closed under them were seen only on a busy machine; this does not force them.)"""
    results: dict[int, str] = {}

    async def one(n: int) -> None:
        results[n] = (await long_lived.execute(f"print({n} * {n})", timeout=120)).stdout

    async with anyio.create_task_group() as tasks:
        for n in range(100):
            tasks.start_soon(one, n)
    assert results == {n: f"{n * n}\n" for n in range(100)}
