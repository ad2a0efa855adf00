"""The Docker environment, against a real Docker daemon (started by the tests when none
runs) and an image built here from Debian's packages, in both lifecycles."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

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
from tests.dockerd import built_image, daemon

pytestmark = pytest.mark.anyio


@pytest.fixture(scope="session")
def docker_host() -> Iterator[str]:
    with daemon() as host:
        yield host


@pytest.fixture(scope="session")
def image(docker_host: str) -> str:
    return built_image(docker_host)


@pytest.fixture(scope="session")
def docker_client(docker_host: str) -> Iterator[docker.DockerClient]:
    client = docker.DockerClient(base_url=docker_host, timeout=60)
    yield client
    client.close()


LISTING = (
    "for p in /proc/[0-9]*; do c=$(tr '\\0' ' ' < $p/cmdline 2>/dev/null);"
    ' case "$c" in "/sbin/docker-init "*|"sleep infinity "|"sh -c for p in"*|"tr "*|"") ;;'
    ' *) echo "process $c";; esac;'
    ' done; for f in /workspace/*; do [ -e "$f" ] && echo "workspace $f"; done; true'
)


class DockerBehaviour(EnvironmentBehaviour):
    languages = TEST_LANGUAGES
    per_run = False

    @pytest.fixture
    async def env(
        self, docker_host: str, image: str, docker_client: docker.DockerClient
    ) -> AsyncIterator[DockerRunEnvironment]:
        self.client = docker_client
        env = DockerRunEnvironment(image, per_run=self.per_run, docker_host=docker_host)
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
        left = []
        for container in self.client.containers.list(
            all=True, filters={"label": f"{LABEL}={env.instance}"}
        ):
            if env.shared_container_id == container.id and container.status == "running":
                output = container.exec_run(["sh", "-c", LISTING], user="0").output
                left += [line for line in output.decode().splitlines() if line]
            else:
                left.append(f"container {container.short_id}")
        return left


class TestDockerLongLived(DockerBehaviour):
    per_run = False


class TestDockerPerRun(DockerBehaviour):
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
    assert output == "", output  # no process of the run, no workspace


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
