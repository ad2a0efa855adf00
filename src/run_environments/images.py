"""Container images built here, from Debian's packages: ``runenv images build``.

An image is a Debian root file system made by ``debootstrap --variant=minbase`` with the
packages of the languages asked for, imported into Docker (``docker import``): no registry
is needed, only Debian's package mirror. The image is tagged ``NAME:<hash of what it holds>``
and ``NAME:latest``; building what is there already is a no-op.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tarfile
import tempfile
from collections.abc import Callable, Sequence

import docker

from ._errors import EnvironmentUnavailableError, InvalidOptionsError
from ._languages import get_language

DEFAULT_NAME = "runenv-debian"
SUITE = "bookworm"
MIRROR = "http://deb.debian.org/debian"

PACKAGES: dict[str, tuple[str, ...]] = {
    "python": ("python3",),
    "pytest": ("python3-pytest",),
    "javascript": ("nodejs",),
    "bash": (),  # in every Debian
    "ruby": ("ruby",),
    "perl": ("perl",),
    "php": ("php-cli",),
    "lua": ("lua5.4",),
    "c": ("gcc", "libc6-dev"),
    "cpp": ("g++", "libc6-dev"),
    "go": ("golang-go",),
    "rust": ("rustc",),
    "java": ("default-jdk-headless",),
    "junit": ("default-jdk-headless", "junit5"),
    "sql": ("sqlite3",),
    "awk": ("gawk",),
}
"""Debian packages of the languages an image can hold."""

DEFAULT_LANGUAGES = ("python", "javascript", "bash", "perl", "c", "cpp", "pytest", "sql")

TEST_LANGUAGES = (*DEFAULT_LANGUAGES, "java", "junit")
"""What the tests' image holds: every test of the shared suite that names a language runs."""


def packages_for(languages: Sequence[str]) -> list[str]:
    """The Debian packages for ``languages`` (names or aliases), sorted.

    :raises InvalidOptionsError: for a language no image here can hold.
    """
    wanted: set[str] = set()
    for name in languages:
        language = get_language(name).name
        if language not in PACKAGES:
            raise InvalidOptionsError(
                f"an image cannot hold {language} yet; it can hold {', '.join(PACKAGES)}"
            )
        wanted.update(PACKAGES[language])
    return sorted(wanted)


def image_tag(name: str, packages: Sequence[str]) -> str:
    """``name:<hash>`` for an image of ``packages``."""
    digest = hashlib.sha256(" ".join([SUITE, *sorted(packages)]).encode()).hexdigest()[:12]
    return f"{name}:{digest}"


def build_image(
    client: docker.DockerClient,
    languages: Sequence[str] = DEFAULT_LANGUAGES,
    *,
    name: str = DEFAULT_NAME,
    mirror: str = MIRROR,
    say: Callable[[str], None] = lambda _: None,
) -> str:
    """Build (or find) the image of ``languages`` and tag it ``name:latest`` too; returns
    its ``name:<hash>`` tag. Blocking: minutes the first time.

    :raises EnvironmentUnavailableError: when debootstrap is missing or fails.
    """
    packages = packages_for(languages)
    tag = image_tag(name, packages)
    try:
        image = client.images.get(tag)
        say(f"{tag} is built already")
    except docker.errors.ImageNotFound:
        image = _build(client, packages, tag, mirror, say)
    image.tag(name, "latest")
    return tag


def _build(
    client: docker.DockerClient,
    packages: Sequence[str],
    tag: str,
    mirror: str,
    say: Callable[[str], None],
) -> docker.models.images.Image:
    debootstrap = shutil.which("debootstrap")
    if debootstrap is None:
        raise EnvironmentUnavailableError(
            "building an image needs debootstrap (apt-get install debootstrap)"
        )
    root = tempfile.mkdtemp(prefix="runenv-image-")
    try:
        say(f"debootstrap {SUITE} with {', '.join(packages) or 'nothing more'}")
        command = [debootstrap, "--variant=minbase"]
        if packages:
            command.append(f"--include={','.join(packages)}")
        done = subprocess.run(
            [*command, SUITE, root, mirror], capture_output=True, text=True, check=False
        )
        if done.returncode != 0:
            tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
            raise EnvironmentUnavailableError(f"debootstrap failed: {' / '.join(tail)}")
        for cache in ("var/cache/apt/archives", "var/lib/apt/lists"):
            shutil.rmtree(os.path.join(root, cache), ignore_errors=True)
        say(f"importing {tag}")
        with tempfile.TemporaryFile() as archive:
            with tarfile.open(fileobj=archive, mode="w") as tar:
                tar.add(root, arcname=".")
            archive.seek(0)
            repository, _, version = tag.partition(":")
            client.api.import_image_from_data(archive, repository=repository, tag=version)
        return client.images.get(tag)
    finally:
        shutil.rmtree(root, ignore_errors=True)
