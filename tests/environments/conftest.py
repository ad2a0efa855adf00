"""A Docker daemon (started by the tests when none runs) and the tests' image, once per
session, for the docker environment's tests and those of its command line and service; and
OpenSSH servers with a user of the session's own, for the ssh environment's."""

from __future__ import annotations

from collections.abc import Iterator

import docker
import pytest

from tests.dockerd import built_image, daemon, load_into_podman, podman
from tests.sshd import Server, User, session_user, workdir


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


@pytest.fixture(scope="session")
def podman_host() -> Iterator[str]:
    with podman() as host:
        yield host


@pytest.fixture(scope="session")
def podman_image(podman_host: str, image: str) -> str:
    return load_into_podman(podman_host, image)


@pytest.fixture(scope="session")
def podman_client(podman_host: str) -> Iterator[docker.DockerClient]:
    client = docker.DockerClient(base_url=podman_host, timeout=60)
    yield client
    client.close()


@pytest.fixture(scope="session")
def ssh_user() -> Iterator[User]:
    with workdir() as directory, session_user(directory) as user:
        yield user


@pytest.fixture(scope="session")
def sshd(ssh_user: User) -> Iterator[Server]:
    with workdir() as directory, Server(ssh_user, directory) as server:
        yield server


@pytest.fixture(scope="session")
def jump_sshd(ssh_user: User) -> Iterator[Server]:
    """A second server, reached through the first as a jump host."""
    with workdir() as directory, Server(ssh_user, directory) as server:
        yield server


@pytest.fixture(scope="session")
def known_hosts(sshd: Server, jump_sshd: Server) -> Iterator[str]:
    with workdir() as directory:
        path = directory / "known_hosts"
        path.write_text(sshd.known_hosts_line() + jump_sshd.known_hosts_line())
        yield str(path)
