"""The bubblewrap command line of one sandboxed run.

The sandbox sees the host's system directories read-only, an allow-list of ``/etc``,
a fresh ``/proc`` and ``/dev``, a private ``/tmp`` of bounded size and its workspace at
``/workspace``: nothing else of the host exists inside.
"""

from __future__ import annotations

import glob
import os
import subprocess
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass

from ..._errors import EnvironmentUnavailableError

WORKDIR = "/workspace"
UID = GID = 65534
PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
NODE_PATH = "/usr/share/nodejs:/usr/lib/nodejs"
"""Where Debian's Node.js libraries are (a Node.js built elsewhere does not look there)."""

SYSTEM_DIRS = ("/usr",)
ROOT_LINKS = ("/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")
"""Symbolic links (merged /usr) or directories at the root that interpreters need."""

ETC = (
    "alternatives", "ld.so.cache", "ld.so.conf", "ld.so.conf.d", "ssl", "ca-certificates",
    "ca-certificates.conf", "localtime", "timezone", "nsswitch.conf", "mime.types", "magic",
    "os-release", "debian_version", "gai.conf", "protocols", "services", "java-*", "php",
    "perl", "gcrypt", "R", "mono", "fpc.cfg", "fpc-*.cfg", "groovy", "matplotlibrc",
)  # fmt: skip
"""What of /etc interpreters and compilers read; shadow files, keys and host names stay out."""

NETWORK_ETC = ("resolv.conf", "hosts", "host.conf")

VAR = ("lib/ghc",)
"""What of /var compilers read (GHC's package database), read-only."""

PASSWD = f"root:x:0:0:root:/root:/usr/sbin/nologin\nsandbox:x:{UID}:{GID}::{WORKDIR}:/bin/sh\n"
GROUP = f"root:x:0:\nsandbox:x:{GID}:\n"


@dataclass(frozen=True, kw_only=True)
class Fds:
    """Descriptors bubblewrap reads or writes during one run."""

    seccomp: int
    passwd: int
    group: int
    info: int
    block: int


def _system_mounts() -> Iterator[str]:
    for directory in SYSTEM_DIRS:
        yield from ("--ro-bind", directory, directory)
    for path in ROOT_LINKS:
        if os.path.islink(path):
            yield from ("--symlink", os.readlink(path), path)
        elif os.path.isdir(path):
            yield from ("--ro-bind", path, path)


def _var() -> Iterator[str]:
    for name in VAR:
        path = f"/var/{name}"
        if os.path.isdir(path):
            yield from ("--ro-bind", path, path)


def _etc(names: tuple[str, ...]) -> Iterator[str]:
    for pattern in names:
        for path in sorted(glob.glob(f"/etc/{pattern}")):
            if os.path.exists(path):
                yield from ("--ro-bind", path, path)


def static_arguments(*, network: bool, disable_userns: bool) -> list[str]:
    """The part of the command line that is the same for every run."""
    args = ["--unshare-all", "--unshare-user"]
    if disable_userns:
        args.append("--disable-userns")
    if network:
        args.append("--share-net")
    args += ["--die-with-parent", "--uid", str(UID), "--gid", str(GID)]
    args += ["--hostname", "sandbox", "--cap-drop", "ALL"]
    args += [*_system_mounts(), *_var(), *_etc(ETC + (NETWORK_ETC if network else ()))]
    args += ["--proc", "/proc", "--dev", "/dev", "--clearenv"]
    return args


def probe_static_arguments(bwrap: str | None, network: bool) -> list[str]:
    """The part of every command line, bubblewrap's own path first; asks bubblewrap what it
    offers (blocking: for a worker thread)."""
    assert bwrap is not None
    help_text = subprocess.run([bwrap, "--help"], capture_output=True, text=True, check=False)
    disable = "--disable-userns" in help_text.stdout
    return [bwrap, *static_arguments(network=network, disable_userns=disable)]


def run_arguments(
    *,
    fds: Fds,
    workspace: str,
    tmp_size: int | None,
    shm_size: int,
    cwd: str,
    env: Mapping[str, str],
    workdir: str = WORKDIR,
    binds: Sequence[tuple[str, str]] = (),
) -> list[str]:
    """The part of the command line for one run, up to and including ``--``.

    :param tmp_size: bytes of a fresh ``/tmp``; None when ``binds`` provide one.
    :param shm_size: bytes of ``/dev/shm`` (otherwise an unbounded part of ``/dev``).
    :param binds: further (host directory, sandbox directory) pairs, writable.
    """
    args = ["--size", str(tmp_size), "--tmpfs", "/tmp"] if tmp_size is not None else []
    args += ["--size", str(shm_size), "--tmpfs", "/dev/shm"]
    args += ["--bind", workspace, workdir]
    for host, target in binds:
        args += ["--bind", host, target]
    args += ["--chdir", cwd]
    args += ["--ro-bind-data", str(fds.passwd), "/etc/passwd"]
    args += ["--ro-bind-data", str(fds.group), "/etc/group"]
    for name, value in env.items():
        args += ["--setenv", name, value]
    args += ["--remount-ro", "/"]  # after every mount: only /workspace and /tmp are writable
    args += ["--seccomp", str(fds.seccomp), "--info-fd", str(fds.info)]
    args += ["--block-fd", str(fds.block), "--"]
    return args


def data_fd(data: bytes) -> int:
    """A descriptor to read ``data`` from."""
    if len(data) > 4096:
        raise EnvironmentUnavailableError("more data than a pipe surely holds")
    read, write = os.pipe()
    try:
        os.write(write, data)
    finally:
        os.close(write)
    return read
