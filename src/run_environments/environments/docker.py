"""The Docker environment: code runs in a container, through the official ``docker`` SDK.

Two lifecycles, one option. By default one long-lived container serves every run: each run
gets a directory of its own under ``/workspace`` and a user id of its own, and its commands
are ``docker exec``'d as that user. ``docker exec`` has no kill API, and an exec'd process
outlives a client that goes away; so a run is stopped by a second exec, as the run's user, of
``kill -KILL -1``: every process of that user, double-forked daemons included, and nothing
else (the container runs with ``no-new-privileges`` and no capabilities, so no process can
change its user). With ``per_run=True`` each run has a container of its own, killed and
removed whole at its end.

Containers are hardened by default: no network, every capability dropped,
``no-new-privileges``, a read-only root file system with tmpfs ``/workspace`` and ``/tmp``,
memory, pids and CPU limits, Docker's default seccomp profile, and ``docker-init`` as PID 1.
Each carries labels naming the environment that made it and its process; ``cleanup()``
removes an environment's own, and a new environment removes those whose process is gone.

The SDK is blocking: its calls run in worker threads; an exec's output is read in one.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import itertools
import os
import shlex
import signal
import socket
import tarfile
import threading
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

import anyio
import anyio.to_thread
import docker
import docker.errors
from docker.utils.socket import frames_iter

from .._errors import EnvironmentUnavailableError, RunEnvironmentError
from .._languages import LANGUAGES
from .._models import Limits
from .._process import Outcome
from .._remote import RemoteCalls, Sink, supervise_remote
from .base import CommandRunEnvironment, EnvironmentStatus
from .command import Command
from .workspace import Workspace

DEFAULT_IMAGE = "runenv-debian:latest"
"""The image ``runenv images build`` makes."""

LABEL = "io.run-environments.instance"
"""Every container carries it: the environment that made it (its ``instance``)."""
OWNER = "io.run-environments.owner"
"""The making process: ``<pid>:<start time>``, so a container of a dead one is found."""

WORKSPACES = "/workspace"
FIRST_UID = 20000
KILL_WAIT = 2.0
"""Seconds to wait, after killing a run at its deadline, for its end and last output."""
MAX_FETCH = 64 << 20
"""The largest file ``fetch_files`` brings back."""

T = TypeVar("T")


def _owner_tag(pid: int) -> str | None:
    """``<pid>:<start time in clock ticks>`` of a live process, or None."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return f"{pid}:{fh.read().rsplit(')', 1)[1].split()[19]}"
    except (OSError, IndexError):
        return None


class DockerRunEnvironment(CommandRunEnvironment["ContainerWorkspace"]):
    """Runs code in Docker containers of ``image``.

    :param image: the image (default: the one ``runenv images build`` makes); languages are
        those whose tools it has.
    :param per_run: a container per run (strongest isolation) instead of one long-lived
        container with an exec per run (fast).
    :param docker_host: the daemon's address (default: ``$DOCKER_HOST``, else the local
        socket).
    :param network: give containers Docker's default network instead of none.
    :param limits: the defaults of every run (memory, processes, CPU time, disk).
    :param kill_grace: seconds between SIGTERM and SIGKILL when a run is stopped.
    """

    name = "docker"

    def __init__(
        self,
        image: str = DEFAULT_IMAGE,
        *,
        per_run: bool = False,
        docker_host: str | None = None,
        network: bool = False,
        limits: Limits | None = None,
        kill_grace: float = 0.5,
    ) -> None:
        super().__init__()
        self.image = image
        self.per_run = per_run
        self.docker_host = docker_host or os.environ.get("DOCKER_HOST")
        self.network = network
        self.limits = limits or Limits(memory=512 << 20, processes=256, disk=256 << 20)
        self.kill_grace = kill_grace
        self.instance = uuid.uuid4().hex[:12]
        """The value of every container's ``io.run-environments.instance`` label."""
        self._client: docker.DockerClient | None = None
        self._shared: Any = None  # the long-lived container
        self._lock = anyio.Lock()
        self._connecting = anyio.Lock()
        self._uids = itertools.count(FIRST_UID)
        self._found: dict[str, str | None] | None = None
        self._swept = False

    # -- the daemon -----------------------------------------------------------------------
    async def _call(self, function: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """``function`` in a worker thread, with the SDK's errors as ours."""

        def call() -> T:
            return function(*args, **kwargs)

        try:
            return await anyio.to_thread.run_sync(call, abandon_on_cancel=False)
        except RunEnvironmentError:
            raise
        except docker.errors.ImageNotFound:
            raise EnvironmentUnavailableError(
                f"the image {self.image!r} is not here: build it with `runenv images build`"
                " (or pull it, where the network allows)"
            ) from None
        except docker.errors.NotFound as exc:
            raise EnvironmentUnavailableError(f"the container is gone: {exc}") from None
        except docker.errors.DockerException as exc:
            raise EnvironmentUnavailableError(_daemon_problem(self.docker_host, exc)) from None

    async def client(self) -> docker.DockerClient:
        """The SDK's client, connected on first use (and the leftovers of dead owners
        removed then).

        :raises EnvironmentUnavailableError: when the daemon cannot be reached.
        """
        async with self._connecting:  # one client: a second one, dropped, closes its pool
            if self._client is None:
                base = self.docker_host or "unix:///var/run/docker.sock"
                await self._call(_reach, base)
                client = await self._call(docker.DockerClient, base_url=base, timeout=60)
                try:
                    await self._call(client.ping)
                except BaseException:
                    client.close()
                    raise
                self._client = client
            if not self._swept:
                self._swept = True
                await self._call(_sweep, self._client)
            return self._client

    def _spec(self) -> dict[str, Any]:
        limits = self.limits
        tmpfs_size = limits.disk or 256 << 20
        spec: dict[str, Any] = {
            "image": self.image,
            "command": ["sleep", "infinity"],
            "detach": True,
            "init": True,
            "user": "65534:65534",
            "network_mode": "default" if self.network else "none",
            "cap_drop": ["ALL"],
            "security_opt": ["no-new-privileges"],
            "read_only": True,
            "tmpfs": {
                "/tmp": f"size={tmpfs_size},mode=1777,exec",
                WORKSPACES: f"size={tmpfs_size},mode=1777,exec",
            },
            "labels": {LABEL: self.instance, OWNER: _owner_tag(os.getpid()) or ""},
        }
        if limits.memory:
            spec["mem_limit"] = limits.memory
            spec["memswap_limit"] = limits.memory  # no swap beyond the memory limit
        if limits.processes:
            spec["pids_limit"] = limits.processes
        return spec

    async def _start_container(self) -> Any:
        client = await self.client()
        spec = self._spec()
        spec.pop("detach")
        # create, then start: ``run`` would try to pull an image that is not here
        container = await self._call(client.containers.create, **spec)
        try:
            await self._call(container.start)
        except BaseException:
            await self._drop(container)
            raise
        return container

    async def _container(self) -> Any:
        """The long-lived container, started on first use (and again after it died)."""
        async with self._lock:
            if self._shared is not None:
                await self._call(self._shared.reload)
                if self._shared.status != "running":
                    await self._drop(self._shared)
                    self._shared = None
            if self._shared is None:
                self._shared = await self._start_container()
                self._found = None
            return self._shared

    async def _drop(self, container: Any) -> None:
        with anyio.CancelScope(shield=True), contextlib.suppress(RunEnvironmentError):
            await self._call(container.remove, force=True)

    @property
    def shared_container_id(self) -> str | None:
        """The long-lived container's id, once it runs (None with ``per_run``)."""
        return self._shared.id if self._shared is not None else None

    # -- readiness ------------------------------------------------------------------------
    async def is_ready(self) -> bool:
        return (await self.status()).ready

    async def status(self) -> EnvironmentStatus:
        try:
            client = await self.client()
            await self._call(client.images.get, self.image)
        except RunEnvironmentError as exc:
            return EnvironmentStatus(name=self.name, ready=False, reason=str(exc))
        return await super().status()

    # -- the pipeline's parts -------------------------------------------------------------
    async def _which(self, program: str) -> str | None:
        if program == "{python}":
            return None
        if self._found is None or program not in self._found:
            await self._find_all(program)
        assert self._found is not None
        return self._found.get(program)

    async def _find_all(self, program: str) -> None:
        """Every program of the language table, looked up in the image at once."""
        names = sorted({a[0] for lang in LANGUAGES for a in (*lang.compile, *lang.run)
                        if not a[0].startswith("{")} | {program})  # fmt: skip
        script = "; ".join(f"command -v {shlex.quote(n)} || echo -" for n in names)
        container = await self._container() if not self.per_run else None
        client = await self.client()
        if container is not None:
            result = await self._call(container.exec_run, ["sh", "-c", script], user="65534")
            output = result.output
        else:
            await self._call(client.images.get, self.image)  # not pulled: said plainly
            spec = {**self._spec(), "command": ["sh", "-c", script], "detach": False}
            spec["remove"] = True
            output = await self._call(client.containers.run, **spec)
        found = output.decode(errors="replace").split("\n")
        self._found = {
            name: path.strip() if path.strip() not in ("", "-") else None
            for name, path in zip(names, found, strict=False)
        }

    async def _workspace(self) -> ContainerWorkspace:
        container = await (self._start_container() if self.per_run else self._container())
        uid = next(self._uids)
        return ContainerWorkspace(self, container, uid, own=self.per_run)

    async def _run(self, command: Command, workspace: ContainerWorkspace) -> Outcome:
        container = workspace.container.id
        before = _oom_kills(container)
        outcome = await supervise_remote(
            _exec_calls(self, workspace, command),
            command,
            kill_wait=KILL_WAIT,
            kill_grace=self.kill_grace,
        )
        after = _oom_kills(container)
        if outcome.signal == "SIGKILL" and before is not None and after is not None:
            if after > before:  # the kernel killed something of the container for memory
                outcome = dataclasses.replace(outcome, oom_killed=True)
        return outcome

    async def cleanup(self) -> None:
        """Remove every container this environment made; the next run starts anew."""
        with anyio.CancelScope(shield=True):
            await self._remove_workspaces()
            self._shared = None
            if self._client is not None:
                client = self._client
                with contextlib.suppress(RunEnvironmentError):
                    found = await self._call(
                        client.containers.list,
                        all=True,
                        filters={"label": f"{LABEL}={self.instance}"},
                    )
                    for container in found:
                        await self._drop(container)
                self._client = None
                self._swept = False
                await self._call(client.close)


class ContainerWorkspace(Workspace):
    """A run's directory in a container (``/workspace/<random>``), made and owned by the
    run's user; files go in and come out as tar streams through execs of ``tar`` as that
    user (Docker's archive API refuses a read-only root file system, and an exec as the
    run's user can reach nothing the run could not)."""

    def __init__(self, env: DockerRunEnvironment, container: Any, uid: int, own: bool) -> None:
        super().__init__(f"{WORKSPACES}/{uuid.uuid4().hex}")
        self.env = env
        self.container = container
        self.uid = uid
        self.own = own  # the container is this run's alone: removed with the workspace
        self._made = False
        self._removed = False

    @property
    def user(self) -> str:
        return f"{self.uid}:{self.uid}"

    async def _exec(
        self, script: str, *args: str, data: bytes = b"", limit: int = 1 << 20
    ) -> bytes:
        code, out, err = await self.env._call(
            _exec_io, self.env._client, self.container.id, ["sh", "-c", script, "sh", *args],
            self.user, data, limit,
        )  # fmt: skip
        if code != 0:
            message = err.decode(errors="replace").strip() or f"exit code {code}"
            raise EnvironmentUnavailableError(f"the container's workspace: {message}")
        return out

    async def write(self, files: Mapping[str, bytes]) -> None:
        """Write ``files``; the first write makes the directory too, in the same exec (the
        pipeline writes before anything else)."""
        buffer = io.BytesIO()
        with tarfile.open(fileobj=buffer, mode="w") as tar:
            for path, content in files.items():
                info = tarfile.TarInfo(path)
                info.size, info.mode, info.mtime = len(content), 0o644, int(time.time())
                tar.addfile(info, io.BytesIO(content))
        make = "" if self._made else 'mkdir -m 700 -- "$1" && '
        await self._exec(make + 'tar -x -f - -C "$1"', self.path, data=buffer.getvalue())
        self._made = True

    async def make_dir(self, relative: str) -> None:
        await self._exec('cd -- "$1" && mkdir -p -- "$2"', self.path, relative)

    async def read(self, paths: Sequence[str]) -> dict[str, bytes]:
        found = {}
        for path in paths:
            with contextlib.suppress(EnvironmentUnavailableError):
                stream = await self._exec(
                    'tar -c -f - -C "$1" -- "$2"', self.path, path, limit=MAX_FETCH + (1 << 20)
                )
                with tarfile.open(fileobj=io.BytesIO(stream)) as tar:
                    member = tar.next()
                    if member is not None and member.isreg() and member.size <= MAX_FETCH:
                        extracted = tar.extractfile(member)
                        if extracted is not None:
                            found[path] = extracted.read()
        return found

    async def remove(self) -> None:
        if self._removed:
            return
        self._removed = True
        with anyio.CancelScope(shield=True), contextlib.suppress(RunEnvironmentError):
            if self.own:
                await self.env._drop(self.container)
                return
            # every process of the run's user, then its files wherever it could write
            script = (
                'kill -KILL -1 2>/dev/null; chmod -R u+rwx -- "$1" 2>/dev/null;'
                ' find /workspace /tmp -xdev -user "$2" -delete 2>/dev/null; true'
            )
            await self._exec(script, self.path, str(self.uid))


def _exec_io(
    client: docker.DockerClient,
    container: str,
    argv: list[str],
    user: str,
    data: bytes,
    limit: int,
) -> tuple[int, bytes, bytes]:
    """Run ``argv`` in the container as ``user`` with ``data`` on its stdin; its exit code,
    stdout and stderr (each at most ``limit`` bytes; past it the answer is a failure).
    Blocking."""
    api = client.api
    created = api.exec_create(container, argv, stdin=True, user=user)
    sock = api.exec_start(created["Id"], socket=True)
    raw = getattr(sock, "_sock", sock)
    try:
        raw.sendall(data)
        raw.shutdown(socket.SHUT_WR)
        out, err = bytearray(), bytearray()
        for stream, chunk in frames_iter(sock, tty=False):
            target = out if stream == 1 else err
            target += chunk
            if len(target) > limit:
                return 1, b"", b"more output than expected"
    finally:
        _close(sock)
    code = api.exec_inspect(created["Id"]).get("ExitCode")
    return (code if code is not None else 1), bytes(out), bytes(err)


def _exec_calls(
    env: DockerRunEnvironment, workspace: ContainerWorkspace, command: Command
) -> RemoteCalls:
    """One exec, as the remote supervisor drives it: output read in a worker thread, stopped
    by an exec of ``kill -1`` as the run's user (or, for a container of its own, by killing
    the container)."""
    client = env._client
    assert client is not None
    api = client.api
    container = workspace.container
    user = f"{workspace.uid}:{workspace.uid}"
    state: dict[str, Any] = {}
    done = anyio.Event()

    async def start(sink: Sink) -> None:
        created = await env._call(
            api.exec_create,
            container.id,
            list(command.argv),
            stdin=command.stdin is not None,
            user=user,
            environment={
                "HOME": workspace.path,
                "LANG": "C.UTF-8",
                "TMPDIR": "/tmp",
                **command.env,
            },
            workdir=command.cwd,
        )
        state["id"] = created["Id"]
        sock = await env._call(api.exec_start, created["Id"], socket=True)
        state["sock"] = sock
        token = anyio.lowlevel.current_token()

        def pump() -> None:
            try:
                for stream, data in frames_iter(sock, tty=False):
                    name = "stdout" if stream == 1 else "stderr"
                    anyio.from_thread.run(_deliver, sink, name, data, token=token)
            except Exception as exc:  # carried to wait()
                state.setdefault("error", exc)
            finally:
                with contextlib.suppress(RuntimeError):  # the loop is gone: nobody waits
                    anyio.from_thread.run_sync(done.set, token=token)

        state["thread"] = threading.Thread(target=pump, daemon=True)
        state["thread"].start()

    async def wait() -> tuple[int | None, str | None]:
        await done.wait()
        if "error" in state and not isinstance(state["error"], OSError):
            raise state["error"]
        info = await env._call(api.exec_inspect, state["id"])
        code = info.get("ExitCode")
        if code is not None and 128 < code < 128 + signal.NSIG:
            with contextlib.suppress(ValueError):  # Docker says a signal as 128+N, as a shell
                return None, signal.Signals(code - 128).name
        return code, None

    async def signal_all(number: int) -> None:
        if workspace.own and number == signal.SIGKILL:
            with contextlib.suppress(RunEnvironmentError):
                await env._call(container.kill)
            return
        with contextlib.suppress(RunEnvironmentError):
            await env._call(container.exec_run, ["sh", "-c", f"kill -{number} -1"], user=user)

    async def kill() -> None:
        if "id" in state:
            state["killed"] = True
            await signal_all(signal.SIGKILL)

    async def terminate() -> None:
        state["killed"] = True
        await signal_all(signal.SIGTERM)

    async def send(data: bytes) -> None:
        sock = state["sock"]
        raw = getattr(sock, "_sock", sock)
        with contextlib.suppress(OSError):
            # a program that reads nothing blocks the write: when the run ends meanwhile,
            # the thread is let go, and closing the socket ends its write
            await anyio.to_thread.run_sync(raw.sendall, data, abandon_on_cancel=True)

    async def feed(data: bytes) -> None:
        await send(data)
        raw = getattr(state["sock"], "_sock", state["sock"])
        with contextlib.suppress(OSError):
            raw.shutdown(socket.SHUT_WR)

    async def close() -> None:
        sock = state.get("sock")
        if sock is not None:
            _close(sock)

    return RemoteCalls(
        start=start,
        wait=wait,
        kill=kill,
        feed=feed,
        send=send,
        terminate=terminate,
        signal=signal_all,
        close=close,
    )


async def _deliver(sink: Sink, name: str, data: bytes) -> None:
    await sink(name, data)


def _oom_kills(container: str) -> int | None:
    """How many processes of the container the kernel killed for memory, read from its
    cgroup where the daemon runs on this machine (cgroup v1 or v2); None when unknown."""
    for path, key in (
        (f"/sys/fs/cgroup/memory/docker/{container}/memory.oom_control", "oom_kill"),
        (f"/sys/fs/cgroup/system.slice/docker-{container}.scope/memory.events", "oom_kill"),
        (f"/sys/fs/cgroup/docker/{container}/memory.events", "oom_kill"),
    ):
        try:
            with open(path) as fh:
                for line in fh:
                    name, _, value = line.partition(" ")
                    if name == key:
                        return int(value)
        except (OSError, ValueError):
            continue
    return None


def _close(sock: Any) -> None:
    """Close an exec's socket: the SDK's file-like wrapper and the socket under it."""
    for each in (sock, getattr(sock, "_sock", None)):
        if each is not None:
            with contextlib.suppress(OSError):
                each.close()


def _sweep(client: docker.DockerClient) -> None:
    """Remove the containers of environments whose process is gone (blocking)."""
    for container in client.containers.list(all=True, filters={"label": LABEL}):
        owner = container.labels.get(OWNER, "")
        pid = owner.partition(":")[0]
        if pid.isdigit() and _owner_tag(int(pid)) == owner:
            continue  # its maker lives
        with contextlib.suppress(docker.errors.DockerException):
            container.remove(force=True)


def _reach(base: str) -> None:
    """Connect to a local daemon's socket once, to say precisely why it cannot be reached
    (the SDK's own attempt leaves its socket open when it fails). Blocking."""
    if not base.startswith("unix://"):
        return
    path = base.removeprefix("unix://")
    with socket.socket(socket.AF_UNIX) as probe:
        probe.settimeout(10)
        try:
            probe.connect(path)
        except PermissionError:
            raise EnvironmentUnavailableError(
                f"permission denied on the Docker socket {base}: run as a member of the"
                " docker group (or root)"
            ) from None
        except OSError:
            raise EnvironmentUnavailableError(
                f"the Docker daemon is not running at {base} (start dockerd, or set DOCKER_HOST)"
            ) from None


def _daemon_problem(host: str | None, exc: BaseException) -> str:
    """What went wrong reaching the daemon, in words a user acts on."""
    where = host or "unix:///var/run/docker.sock"
    text = str(exc)
    if "Permission denied" in text or isinstance(exc.__context__, PermissionError):
        return (
            f"permission denied on the Docker socket {where}: run as a member of the"
            " docker group (or root)"
        )
    if "No such file" in text or "Connection refused" in text or "FileNotFoundError" in text:
        return f"the Docker daemon is not running at {where} (start dockerd, or set DOCKER_HOST)"
    return f"Docker at {where}: {text}"
