"""A Docker daemon and an image for the tests: the machine's daemon when one answers, else a
dockerd of the test session's own (``--iptables=false --bridge=none``), stopped by its PID;
the image built once per machine (a cached root file system, imported into each daemon)."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import docker

from run_environments.images import TEST_LANGUAGES, build_image, image_tag, packages_for
from tests.helpers import is_running

CACHE = Path(os.environ.get("RUNENV_TEST_CACHE", "/var/cache/run-environments"))
"""Where the built image is kept between test sessions (as an exported tar)."""


def _answers(host: str) -> bool:
    if host.startswith("unix://"):  # the SDK leaves its socket open when it cannot connect
        with socket.socket(socket.AF_UNIX) as probe:
            try:
                probe.connect(host.removeprefix("unix://"))
            except OSError:
                return False
    try:
        client = docker.DockerClient(base_url=host, timeout=5)
        try:
            return bool(client.ping())
        finally:
            client.close()
    except docker.errors.DockerException:
        return False


@contextlib.contextmanager
def _service(
    name: str, argv: list[str], host: str, run: Path, *also: Path, **env: str
) -> Iterator[None]:
    """Run a daemon until ``host`` answers, then until the block ends: stopped by its PID
    (SIGTERM, then SIGKILL), its log in ``run``. ``run/owner`` names this session, the
    daemon and the directories ``also`` to remove, for :func:`sweep_abandoned`."""
    with (run / "log").open("wb") as log:
        process = subprocess.Popen(
            argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            env={**os.environ, **env},
        )  # fmt: skip
    (run / "owner").write_text(json.dumps([os.getpid(), process.pid, [str(p) for p in also]]))
    try:
        deadline = time.monotonic() + 60
        while not _answers(host):
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{name} did not start: {(run / 'log').read_text()[-500:]}")
            time.sleep(0.1)
        yield
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def sweep_abandoned() -> None:
    """Stop the daemons of test sessions that were killed before they could (by the PIDs
    their ``owner`` files name, checked against the daemon's command line), and remove
    their directories."""
    for run in [*Path("/run").glob("runenv-dockerd-*"), *Path("/run").glob("runenv-podman-*")]:
        try:
            session, pid, also = json.loads((run / "owner").read_text())
        except (OSError, ValueError):
            continue  # being set up, or not ours
        if is_running(session):
            continue
        try:
            ours = str(run).encode() in Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            ours = False
        if ours:
            os.kill(pid, signal.SIGTERM)
            deadline = time.monotonic() + 30
            while is_running(pid) and time.monotonic() < deadline:
                time.sleep(0.1)
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        subprocess.run(["umount", "-R", str(run / "exec")], capture_output=True, check=False)
        for directory in (run, *map(Path, also)):
            shutil.rmtree(directory, ignore_errors=True)


@contextlib.contextmanager
def daemon() -> Iterator[str]:
    """The address of a running Docker daemon, started here when none answers (after
    sweeping away what killed sessions left)."""
    for host in (os.environ.get("DOCKER_HOST"), "unix:///var/run/docker.sock"):
        if host and _answers(host):
            yield host
            return
    dockerd = shutil.which("dockerd")
    if dockerd is None or os.geteuid() != 0:
        raise RuntimeError("no Docker daemon answers, and this session cannot start one")
    sweep_abandoned()
    run = Path(tempfile.mkdtemp(prefix="runenv-dockerd-", dir="/run"))
    data = Path(tempfile.mkdtemp(prefix="runenv-dockerd-", dir="/var/lib"))
    host = f"unix://{run}/docker.sock"
    argv = [dockerd, "--iptables=false", "--bridge=none", "--host", host,
            "--data-root", str(data), "--exec-root", str(run / "exec"),
            "--pidfile", str(run / "docker.pid")]  # fmt: skip
    try:
        with _service("dockerd", argv, host, run, data):
            yield host
    finally:
        subprocess.run(["umount", "-R", str(run / "exec")], capture_output=True, check=False)
        shutil.rmtree(run, ignore_errors=True)
        shutil.rmtree(data, ignore_errors=True)


def built_image(host: str) -> str:
    """The tests' image in the daemon at ``host``: imported from the machine's cache, which
    the first session builds (under a lock, so that concurrent sessions build it once)."""
    client = docker.DockerClient(base_url=host, timeout=600)
    tag = image_tag("runenv-test", packages_for(TEST_LANGUAGES))
    try:
        client.images.get(tag)
        return tag
    except docker.errors.ImageNotFound:
        pass
    CACHE.mkdir(parents=True, exist_ok=True)
    saved = CACHE / f"{tag.replace(':', '-')}.tar"
    with (CACHE / "build.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if saved.exists():
            with saved.open("rb") as archive:
                client.images.load(archive.read())
        else:
            build_image(client, TEST_LANGUAGES, name="runenv-test")
            partial = saved.with_suffix(".partial")
            with partial.open("wb") as archive:
                for chunk in client.images.get(tag).save(named=True):
                    archive.write(chunk)
            partial.rename(saved)
            for stale in CACHE.glob("runenv-test-*.tar"):  # images of other contents
                if stale != saved:
                    stale.unlink()
    client.close()
    return tag


class SocketProxy:
    """A Unix socket in front of a daemon's, that can go away and come back: the daemon, as
    its clients see it, going down (and up) while the real one keeps its containers."""

    def __init__(self, target: str, path: Path) -> None:
        self.target = target.removeprefix("unix://")
        self.path = path
        self.address = f"unix://{path}"
        self._listener: socket.socket | None = None
        self._open: set[socket.socket] = set()
        self._lock = threading.Lock()

    def start(self) -> None:
        listener = socket.socket(socket.AF_UNIX)
        listener.bind(str(self.path))
        listener.listen(64)
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def stop(self) -> None:
        """Close the socket and every connection through it."""
        listener, self._listener = self._listener, None
        if listener is not None:
            listener.close()
            self.path.unlink(missing_ok=True)
        with self._lock:
            for each in self._open:
                with contextlib.suppress(OSError):
                    each.shutdown(socket.SHUT_RDWR)
                each.close()
            self._open.clear()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            upstream = socket.socket(socket.AF_UNIX)
            upstream.connect(self.target)
            with self._lock:
                self._open |= {client, upstream}
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._copy, args=(a, b), daemon=True).start()

    @staticmethod
    def _copy(source: socket.socket, sink: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := source.recv(65536):
                sink.sendall(data)
            sink.shutdown(socket.SHUT_WR)

    def __enter__(self) -> SocketProxy:
        self.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()


@contextlib.contextmanager
def podman() -> Iterator[str]:
    """The address of a Podman service of this session's own (its Docker-compatible API on
    a Unix socket), stopped by its PID."""
    program = shutil.which("podman")
    if program is None or os.geteuid() != 0:
        raise RuntimeError("podman is not installed (scripts/setup installs it), or not root")
    sweep_abandoned()
    run = Path(tempfile.mkdtemp(prefix="runenv-podman-", dir="/run"))
    host = f"unix://{run}/podman.sock"
    # conmon keeps an exec's session (its exit code) this long after it ends, then goes:
    # Podman's 5 minutes would leave a process per exec behind the session
    (run / "containers.conf").write_text("[engine]\nexit_command_delay = 10\n")
    argv = [program, "system", "service", "--time=0", host]
    try:
        with _service("podman", argv, host, run, CONTAINERS_CONF=str(run / "containers.conf")):
            yield host
    finally:
        shutil.rmtree(run, ignore_errors=True)


def load_into_podman(host: str, docker_tag: str) -> str:
    """The tests' image in Podman's store, loaded from the cache the Docker tests filled."""
    tag = f"localhost/{docker_tag}"
    client = docker.DockerClient(base_url=host, timeout=600)
    try:
        client.images.get(tag)
    except docker.errors.ImageNotFound:
        saved = CACHE / f"{docker_tag.replace(':', '-')}.tar"
        with (CACHE / "build.lock").open("w") as lock:
            fcntl.flock(lock, fcntl.LOCK_SH)
            subprocess.run(["podman", "load", "-q", "-i", str(saved)], check=True,
                           capture_output=True)  # fmt: skip
    finally:
        client.close()
    return tag
