"""A Docker daemon (started by the tests when none runs) and the tests' image, once per
session, for the docker environment's tests and those of its command line and service."""

from __future__ import annotations

from collections.abc import Iterator

import docker
import pytest

from tests.dockerd import built_image, daemon, load_into_podman, podman


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
