"""``runenv images build``: a container image for the docker environment, built here."""

from __future__ import annotations

import os

import click

from .._errors import InvalidOptionsError, RunEnvironmentError
from .common import CANNOT_RUN, Failure, err


@click.group()
def images() -> None:
    """Container images for the docker environment."""


@images.command()
@click.argument("name", default="runenv-debian")
@click.option(
    "-l",
    "--language",
    "languages",
    multiple=True,
    help="A language the image holds (repeat it); default: python, javascript, bash, perl,"
    " c, cpp, pytest, sql.",
)
@click.option(
    "--docker-host", help="The Docker daemon (default: $DOCKER_HOST, else the local socket)."
)
@click.option("--mirror", default="http://deb.debian.org/debian", show_default=True)
def build(name: str, languages: tuple[str, ...], docker_host: str | None, mirror: str) -> None:
    """Build the image NAME from Debian's packages (debootstrap, then docker import) and
    tag it NAME:latest; an image of the same contents is reused.

    With network, any image works instead: DockerRunEnvironment(image="python:3.12-slim").
    """
    import docker

    from ..images import DEFAULT_LANGUAGES, build_image

    host = docker_host or os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock"
    try:
        client = docker.DockerClient(base_url=host, timeout=900)
        client.ping()
    except docker.errors.DockerException as exc:
        raise Failure(f"Docker at {host}: {exc}", CANNOT_RUN, "unavailable") from None
    try:
        tag = build_image(
            client,
            languages or DEFAULT_LANGUAGES,
            name=name,
            mirror=mirror,
            say=lambda text: err.print(f"runenv: {text}"),
        )
    except InvalidOptionsError as exc:
        raise Failure(str(exc)) from None
    except (RunEnvironmentError, docker.errors.DockerException) as exc:
        raise Failure(str(exc), CANNOT_RUN, "unavailable") from None
    click.echo(tag)
