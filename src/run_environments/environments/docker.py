"""The Docker environment: code runs in a container, through the official ``docker`` SDK.

Two lifecycles, one option. By default one long-lived container serves every run: each run
gets a directory of its own under ``/workspace`` and a user id of its own, and runs as one
``docker exec`` as that user. The exec carries the run's files (a small tar, in a variable)
and a tiny shell supervisor that makes the directory, sets the run's rlimits, runs the
program and, when it ends, kills every process of the run's user: double-forked daemons
included, and nothing else (the container runs with ``no-new-privileges`` and no
capabilities, so no process can change its user). ``docker exec`` has no kill API, so a run
stopped early (timeout, cancellation, cleanup) is killed by a second exec, as the run's
user, of ``kill -KILL -1``. With ``per_run=True`` each run has a container of its own,
taken from a small pool of started containers (refilled in the background) and removed
whole at its end. A run whose memory or disk limit differs from the environment's gets a
container of its own made with them, in either lifecycle.

Containers are hardened by default: no network, every capability dropped,
``no-new-privileges``, a read-only root file system with tmpfs ``/workspace`` and ``/tmp``,
memory, pids and CPU limits, Docker's default seccomp profile, and ``docker-init`` as PID 1.
Each carries labels naming the environment that made it and its process; ``cleanup()``
removes an environment's own, and a new environment removes those whose process is gone.

The SDK is blocking: its calls run in worker threads; an exec's output is read in one.
Removing a finished run's files or container, and filling the pool, happen in background
threads, off the run's critical path; :meth:`DockerRunEnvironment.settle` waits for them,
and ``cleanup()`` does.
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import io
import itertools
import os
import secrets
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
import docker.types
import requests.exceptions
from docker.utils.socket import frames_iter

from .._errors import EnvironmentUnavailableError, InvalidOptionsError, RunEnvironmentError
from .._languages import LANGUAGES, Language, Toolchain
from .._models import Limits
from .._process import Outcome
from .._remote import RemoteCalls, Sink, supervise_remote
from ..images import PACKAGES
from .base import CommandRunEnvironment, EnvironmentStatus
from .command import Command, rlimit_options
from .workspace import Workspace

DEFAULT_IMAGE = "runenv-debian:latest"
"""The image ``runenv images build`` makes."""

LABEL = "io.run-environments.instance"
"""Every container carries it: the environment that made it (its ``instance``)."""
OWNER = "io.run-environments.owner"
"""The making process: ``<pid>:<start time>``, so a container of a dead one is found."""

DEFAULT_LIMITS = Limits(memory=512 << 20, processes=256, disk=256 << 20, open_files=1024)
"""Limits of every run unless the environment or the execution says otherwise (the
sandbox's)."""
WORKSPACES = "/workspace"
FIRST_UID = 100_000
"""Runs' user ids start at a random point above this, so that two environments on one
machine (whose containers share the kernel's per-user process counts) do not meet."""
KILL_WAIT = 2.0
"""Seconds to wait, after killing a run at its deadline, for its end and last output."""
MAX_FETCH = 64 << 20
"""The largest file ``fetch_files`` brings back."""
INLINE_MAX = 48 << 10
"""The largest tar of a run's files carried in its own exec (base64, in a variable: well
below Linux's 128 KiB per variable); larger ones are written by an exec of their own."""
NPROC = 4096
"""The containers' RLIMIT_NPROC: counted per user id (each run has its own, and its own
lower limit), and set by every daemon, since Podman's default is more than a root without
CAP_SYS_RESOURCE may set."""
FAILED = 125
MARK = "runenv-docker:"
"""Starts what the supervisor says on stderr when it cannot prepare a run (exit code 125)."""
POOLS = 512
CONNECTIONS = 64
"""The SDK client's connection pools (one per URL) and connections kept in each: more than
the URLs and threads of the runs at once (anyio's worker threads are 40)."""
CARRIED = "RUNENV_CARRIED_FILES"
"""The variable that carries a run's files to its exec (unset before the program starts)."""
TOOLS = ("prlimit", "base64", "tar")
"""Programs the environment itself uses in the image, looked up with the languages'."""

T = TypeVar("T")

_PROBED: dict[tuple[str, str], dict[str, str | None]] = {}
"""What each image has (by daemon and image id): probed once per process."""


def _owner_tag(pid: int) -> str | None:
    """``<pid>:<start time in clock ticks>`` of a live process, or None (also for a zombie:
    dead, not yet reaped, and cleaning up nothing)."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    if len(fields) < 20 or fields[0] in ("Z", "X"):
        return None
    return f"{pid}:{fields[19]}"


class DockerRunEnvironment(CommandRunEnvironment["ContainerWorkspace"]):
    """Runs code in Docker containers of ``image``.

    :param image: the image (default: ``$RUNENV_DOCKER_IMAGE``, else the one
        ``runenv images build`` makes); languages are those whose tools it has.
    :param per_run: a container per run (strongest isolation) instead of one long-lived
        container with an exec per run (fast); default: ``$RUNENV_DOCKER_PER_RUN`` (1 or 0).
    :param pool: started containers kept waiting for the next runs, with ``per_run``.
    :param docker_host: the daemon's address (default: ``$DOCKER_HOST``, else the local
        socket).
    :param network: give containers Docker's default network instead of none.
    :param limits: the defaults of every run (memory, processes, CPU time, disk, open files).
    :param kill_grace: seconds between SIGTERM and SIGKILL when a run is stopped.
    """

    name = "docker"

    def __init__(
        self,
        image: str | None = None,
        *,
        per_run: bool | None = None,
        pool: int = 2,
        docker_host: str | None = None,
        network: bool = False,
        limits: Limits | None = None,
        kill_grace: float = 0.5,
    ) -> None:
        super().__init__()
        self.image = image or os.environ.get("RUNENV_DOCKER_IMAGE") or DEFAULT_IMAGE
        if per_run is None:
            per_run = os.environ.get("RUNENV_DOCKER_PER_RUN", "0").lower() in ("1", "true", "yes")
        self.per_run = per_run
        if pool < 0:
            raise InvalidOptionsError(f"pool must be 0 or more, not {pool}")
        self.pool = pool if per_run else 0
        self.docker_host = docker_host or os.environ.get("DOCKER_HOST")
        self.network = network
        self.limits = (limits or Limits()).over(DEFAULT_LIMITS)
        self.kill_grace = kill_grace
        self.instance = uuid.uuid4().hex[:12]
        """The value of every container's ``io.run-environments.instance`` label."""
        self._client: docker.DockerClient | None = None
        self._shared: Any = None  # the long-lived container
        self._lock = anyio.Lock()
        self._connecting = anyio.Lock()
        self._uids = itertools.count(FIRST_UID + secrets.randbelow(1 << 30))
        self._found: dict[str, str | None] | None = None
        self._swept = False
        # work behind the runs (threads), and the pool they fill
        self._guard = threading.Lock()
        self._background: set[threading.Thread] = set()
        self._waiting: list[Any] = []  # started containers of the pool
        self._filling = False
        self._closing = False

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
        except docker.errors.APIError as exc:
            if exc.status_code == 409 and "not running" in str(exc):
                raise EnvironmentUnavailableError(
                    "the container is not running any more (it died or was stopped);"
                    " the next run starts a new one"
                ) from None
            raise EnvironmentUnavailableError(_daemon_problem(self.docker_host, exc)) from None
        except (docker.errors.DockerException, requests.exceptions.ConnectionError) as exc:
            raise EnvironmentUnavailableError(_daemon_problem(self.docker_host, exc)) from None

    @property
    def _base(self) -> str:
        return self.docker_host or "unix:///var/run/docker.sock"

    async def client(self) -> docker.DockerClient:
        """The SDK's client, connected on first use (and the leftovers of dead owners
        removed then).

        :raises EnvironmentUnavailableError: when the daemon cannot be reached.
        """
        async with self._connecting:  # one client: a second one, dropped, closes its pool
            if self._client is None:
                await self._call(_reach, self._base)
                # the SDK keeps a connection pool per URL (each exec has its own URLs) and
                # closes the least recently used past ``num_pools``, also one with a request
                # in flight: with its default 25 pools of 10 connections, fifty runs at once
                # lost requests to closed pools
                client = await self._call(
                    docker.DockerClient, base_url=self._base, timeout=60,
                    num_pools=POOLS, max_pool_size=CONNECTIONS,
                )  # fmt: skip
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

    def _spec(self, limits: Limits) -> dict[str, Any]:
        """How a container is created: hardened, with ``limits``' memory, processes and disk."""
        tmpfs_size = limits.disk or DEFAULT_LIMITS.disk
        spec: dict[str, Any] = {
            "image": self.image,
            "command": ["sleep", "infinity"],
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
        # rlimits below the daemon's own (where it is this machine's): Podman's defaults
        # are above what a root without CAP_SYS_RESOURCE may set, and its containers fail
        ulimits = []
        if limits.open_files:
            n = limits.open_files
            ulimits.append(docker.types.Ulimit(name="nofile", soft=n, hard=n))
        ulimits.append(docker.types.Ulimit(name="nproc", soft=NPROC, hard=NPROC))
        if ulimits:
            spec["ulimits"] = ulimits
        return spec

    async def _start_container(self, limits: Limits) -> Any:
        client = await self.client()
        return await self._call(_started, client, self._spec(limits))

    async def _container(self) -> Any:
        """The long-lived container, started on first use (and again after it died)."""
        async with self._lock:
            if self._shared is None:
                self._shared = await self._start_container(self.limits)
            return self._shared

    async def _forget(self, container: Any) -> None:
        """``container`` failed a run: if it is the long-lived one, the next run starts anew."""
        async with self._lock:
            if self._shared is not None and self._shared.id == container.id:
                self._shared = None
                self._behind(lambda: _remove_container(container))

    async def _own_container(self, limits: Limits) -> Any:
        """A container for one run: a waiting one of the pool when ``limits`` are the
        environment's, else one started now with them."""
        if limits.memory == self.limits.memory and limits.disk == self.limits.disk:
            with self._guard:
                container = self._waiting.pop(0) if self._waiting else None
            self._fill()
            if container is not None:
                return container
        return await self._start_container(limits)

    @property
    def shared_container_id(self) -> str | None:
        """The long-lived container's id, once it runs (None with ``per_run``)."""
        return self._shared.id if self._shared is not None else None

    @property
    def waiting_container_ids(self) -> list[str]:
        """The ids of the pool's started containers that wait for a run."""
        with self._guard:
            return [container.id for container in self._waiting]

    # -- work behind the runs -------------------------------------------------------------
    def _behind(self, work: Callable[[], object]) -> None:
        """Do blocking ``work`` in a thread of its own, after the run that asked for it has
        its result (its failures are the daemon's, and the next run meets them)."""

        def body() -> None:
            try:
                with contextlib.suppress(
                    docker.errors.DockerException, OSError, EnvironmentUnavailableError
                ):
                    _reach(self._base)  # the SDK leaks a socket where it cannot connect
                    work()
            finally:
                with self._guard:
                    self._background.discard(thread)

        thread = threading.Thread(target=body, name="runenv-docker", daemon=True)
        with self._guard:
            self._background.add(thread)
        thread.start()

    def _fill(self) -> None:
        """Start containers for the pool in the background, up to ``pool`` waiting."""
        client = self._client
        with self._guard:
            if self._filling or self._closing or client is None or self.pool == 0:
                return
            self._filling = True
        spec = self._spec(self.limits)

        def fill() -> None:
            try:
                while True:
                    with self._guard:
                        if self._closing or len(self._waiting) >= self.pool:
                            return
                    container = _started(client, spec)
                    with self._guard:
                        self._waiting.append(container)
            finally:
                with self._guard:
                    self._filling = False

        self._behind(fill)

    async def settle(self) -> None:
        """Wait until the work behind finished runs is done: their files and containers
        removed, the pool filled."""
        while True:
            with self._guard:
                threads = list(self._background)
            if not threads:
                return
            for thread in threads:
                await anyio.to_thread.run_sync(thread.join)

    # -- readiness ------------------------------------------------------------------------
    async def is_ready(self) -> bool:
        return (await self.status()).ready

    async def status(self) -> EnvironmentStatus:
        try:
            client = await self.client()
            await self._call(client.images.get, self.image)
        except RunEnvironmentError as exc:
            return EnvironmentStatus(name=self.name, ready=False, reason=str(exc))
        status = await super().status()
        how = (
            f"a container per run ({self.pool} started ahead)" if self.per_run
            else "one long-lived container, an exec per run"
        )  # fmt: skip
        return dataclasses.replace(status, notes=(*status.notes, f"image {self.image}: {how}"))

    # -- the pipeline's parts -------------------------------------------------------------
    async def _toolchain(self, language: Language) -> Toolchain | str:
        chain = await super()._toolchain(language)
        if isinstance(chain, Toolchain):
            return chain
        lacking = chain.split(";")[0]
        how = (
            f"build an image with it: runenv images build --language {language.name}"
            if language.name in PACKAGES
            else "use an image that has it"
        )
        return f"the image {self.image} lacks it ({lacking}); {how}"

    async def _which(self, program: str) -> str | None:
        if program == "{python}":
            return None
        if self._found is None or program not in self._found:
            await self._find_all(program)
        assert self._found is not None
        return self._found.get(program)

    async def _find_all(self, program: str) -> None:
        """Every program of the language table (and the environment's own tools), looked up
        in the image at once."""
        names = sorted({a[0] for lang in LANGUAGES for a in (*lang.compile, *lang.run)
                        if not a[0].startswith("{")} | {program, *TOOLS})  # fmt: skip
        script = "; ".join(f"command -v {shlex.quote(n)} || echo -" for n in names)
        client = await self.client()
        image = await self._call(client.images.get, self.image)  # not pulled: said plainly
        key = (self._base, image.id)
        if program in _PROBED.get(key, {}):
            self._found = _PROBED[key]
            return
        if self.per_run:  # a container for the pool, used first for this
            container = await self._start_container(self.limits)
            with self._guard:
                self._waiting.append(container)
        else:
            container = await self._container()
        result = await self._call(container.exec_run, ["sh", "-c", script], user="65534")
        found = result.output.decode(errors="replace").split("\n")
        self._found = _PROBED[key] = {
            name: path.strip() if path.strip() not in ("", "-") else None
            for name, path in zip(names, found, strict=False)
        }

    async def _workspace(self) -> ContainerWorkspace:
        return await self._workspace_for(Limits())

    async def _workspace_for(self, limits: Limits) -> ContainerWorkspace:
        wanted = limits.over(self.limits)
        dedicated = wanted.memory != self.limits.memory or wanted.disk != self.limits.disk
        if self.per_run or dedicated:
            container, own = await self._own_container(wanted), True
        else:
            container, own = await self._container(), False
        if self._found is None:
            await self._find_all("sh")
        return ContainerWorkspace(self, container, next(self._uids), own=own)

    def _rlimits(self, limits: Limits, asked: Limits) -> list[str]:
        """``prlimit`` and its arguments for a run's rlimits (the environment's defaults
        where the image has no ``prlimit``, which the container's own bounds cover).

        :raises InvalidOptionsError: for a limit asked of a run the image cannot set.
        """
        args = rlimit_options(limits)  # processes per user id: the run's own
        prlimit = (self._found or {}).get("prlimit")
        if prlimit is None:
            wanted = [n for n in ("cpu_time", "open_files", "processes") if getattr(asked, n)]
            if wanted:
                raise InvalidOptionsError(
                    f"limits.{wanted[0]} needs prlimit (util-linux) in the image {self.image!r}"
                )
            return []
        return [prlimit, *args, "--"] if args else []

    def _argv(
        self, command: Command, workspace: ContainerWorkspace
    ) -> tuple[list[str], dict[str, str]]:
        """The exec of a command: the run's supervisor (see the module's doc) around it, and
        the variables it takes (the program gets none of them)."""
        limits = self._rlimits(command.limits.over(self.limits), command.limits)
        prelude, variables = workspace.prelude()
        script = "trap : HUP INT QUIT TERM USR1 USR2 ALRM; umask 077; "
        if prelude:
            script += f"{{ {prelude}; }} || {{ echo {MARK} >&2; exit {FAILED}; }}; "
        script += "".join(f"unset {name}; " for name in variables)
        script += (
            f"cd -- {shlex.quote(command.cwd)} || exit {FAILED}; "
            '"$@"; code=$?; kill -KILL -1 2>/dev/null; exit $code'
        )
        return ["sh", "-c", script, "sh", *limits, *command.argv], variables

    async def _run(self, command: Command, workspace: ContainerWorkspace) -> Outcome:
        container = workspace.container.id
        argv, variables = self._argv(command, workspace)
        before = _oom_kills(container)
        try:
            outcome = await supervise_remote(
                _exec_calls(self, workspace, command, argv, variables),
                command,
                kill_wait=KILL_WAIT,
                kill_grace=self.kill_grace,
            )
        except EnvironmentUnavailableError:
            if not workspace.own:
                await self._forget(workspace.container)
            raise
        if outcome.exit_code == FAILED and MARK.encode() in outcome.stderr:
            said = outcome.stderr.decode(errors="replace").splitlines()
            detail = "; ".join(line for line in said if line and MARK not in line)
            raise EnvironmentUnavailableError(
                "the run's files could not be written in the container"
                + (f": {detail}" if detail else "")
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
            with self._guard:
                self._closing = True
            try:
                await self.settle()
            finally:
                with self._guard:
                    self._closing = False
                    self._waiting.clear()
            self._shared = None
            self._found = None
            if self._client is not None:
                client = self._client
                with contextlib.suppress(RunEnvironmentError):
                    for summary in await self._call(_labelled, client, self.instance):
                        await self._call(_remove_by_id, client, summary["Id"])
                self._client = None
                self._swept = False
                await self._call(client.close)


class ContainerWorkspace(Workspace):
    """A run's directory in a container (``/workspace/<random>``), made and owned by the
    run's user. Its files travel in the run's own exec when they are few (see
    :meth:`prelude`); otherwise, and for files fetched back, as tar streams through execs of
    ``tar`` as that user (Docker's archive API refuses a read-only root file system, and an
    exec as the run's user can reach nothing the run could not)."""

    def __init__(self, env: DockerRunEnvironment, container: Any, uid: int, own: bool) -> None:
        super().__init__(f"{WORKSPACES}/{uuid.uuid4().hex}")
        self.env = env
        self.container = container
        self.uid = uid
        self.own = own  # the container is this run's alone: removed with the workspace
        self._carried: bytes | None = None  # a tar for the first exec to unpack
        self._dirs: list[str] = []  # directories for the first exec to make
        self._made = False
        self._removed = False

    @property
    def user(self) -> str:
        return f"{self.uid}:{self.uid}"

    def prelude(self) -> tuple[str, dict[str, str]]:
        """Shell commands that make the directory with what was written into it so far (for
        the exec that comes first), and the variables they read: the files travel in one,
        which only the run's own user can read in ``/proc`` (an argument, every user in the
        container could); nothing once made."""
        if self._made:
            return "", {}
        path = shlex.quote(self.path)
        steps, variables = [f"mkdir -m 700 -- {path}"], {}
        if self._carried is not None:
            variables[CARRIED] = base64.b64encode(self._carried).decode()
            steps.append(f'printf %s "${CARRIED}" | base64 -d | tar -x -f - -C {path}')
        steps += [f"(cd -- {path} && mkdir -p -- {shlex.quote(d)})" for d in self._dirs]
        self._made, self._carried, self._dirs = True, None, []
        return " && ".join(steps), variables

    async def _exec(
        self, script: str, *args: str, data: bytes = b"", limit: int = 1 << 20
    ) -> bytes:
        prelude, variables = self.prelude()
        if prelude:
            script = f"{prelude} && {script}"
        code, out, err = await self.env._call(
            _exec_io, self.env._client, self.container.id, ["sh", "-c", script, "sh", *args],
            self.user, data, limit, variables,
        )  # fmt: skip
        if code != 0:
            message = err.decode(errors="replace").strip() or f"exit code {code}"
            raise EnvironmentUnavailableError(f"the container's workspace: {message}")
        return out

    async def write(self, files: Mapping[str, bytes]) -> None:
        """Write ``files``: carried by the first exec when they are few and the image has
        ``base64``, else by an exec now."""
        buffer = io.BytesIO()
        with tarfile.open(fileobj=buffer, mode="w") as tar:
            for path, content in files.items():
                info = tarfile.TarInfo(path)
                info.size, info.mode, info.mtime = len(content), 0o644, int(time.time())
                tar.addfile(info, io.BytesIO(content))
            end = tar.offset
        archive = buffer.getvalue()[:end] + bytes(1024)  # no padding to a whole record
        found = self.env._found or {}
        if not self._made and self._carried is None and len(archive) <= INLINE_MAX:
            if found.get("base64") and found.get("tar"):
                self._carried = archive
                return
        try:
            await self._exec('tar -x -f - -C "$1"', self.path, data=archive)
        except EnvironmentUnavailableError as exc:
            detail = str(exc).removeprefix("the container's workspace: ").replace("\n", "; ")
            raise EnvironmentUnavailableError(
                f"the run's files could not be written in the container: {detail}"
            ) from None

    async def make_dir(self, relative: str) -> None:
        if not self._made:
            self._dirs.append(relative)
            return
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
        """Remove the run's container (its own) or its processes and files (a shared one),
        behind the run: its supervisor killed its processes already when it ended."""
        if self._removed:
            return
        self._removed = True
        container, client = self.container, self.env._client
        if self.own:
            self.env._behind(lambda: _remove_container(container))
        elif self._made and client is not None:
            # every process of the run's user, then its files wherever it could write
            script = (
                'kill -KILL -1 2>/dev/null; chmod -R u+rwx -- "$1" 2>/dev/null;'
                ' find /workspace /tmp -xdev -user "$2" -delete 2>/dev/null; true'
            )
            argv = ["sh", "-c", script, "sh", self.path, str(self.uid)]
            self.env._behind(lambda: _exec_io(client, container.id, argv, self.user, b"", 1 << 16))


def _started(client: docker.DockerClient, spec: dict[str, Any]) -> Any:
    """A container created and started from ``spec`` (blocking). Created, then started:
    ``run`` would try to pull an image that is not here."""
    container = client.containers.create(**spec)
    try:
        container.start()
    except BaseException:
        with contextlib.suppress(docker.errors.DockerException):
            container.remove(force=True)
        raise
    return container


def _remove_container(container: Any) -> None:
    with contextlib.suppress(docker.errors.NotFound):
        container.remove(force=True)


def _exec_io(
    client: docker.DockerClient,
    container: str,
    argv: list[str],
    user: str,
    data: bytes,
    limit: int,
    variables: Mapping[str, str] | None = None,
) -> tuple[int, bytes, bytes]:
    """Run ``argv`` in the container as ``user`` with ``data`` on its stdin; its exit code,
    stdout and stderr (each at most ``limit`` bytes; past it the answer is a failure).
    Blocking."""
    api = client.api
    created = api.exec_create(container, argv, stdin=True, user=user, environment=variables)
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
    env: DockerRunEnvironment,
    workspace: ContainerWorkspace,
    command: Command,
    argv: list[str],
    variables: Mapping[str, str],
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
            argv,
            stdin=command.stdin is not None,
            user=user,
            environment={
                "HOME": workspace.path,
                "LANG": "C.UTF-8",
                "TMPDIR": "/tmp",
                **command.env,
                **variables,
            },
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
        await env._call(_reach, env._base)  # the stream ended: with the daemon?
        info = await env._call(api.exec_inspect, state["id"])
        code = info.get("ExitCode")
        if code is not None and 128 < code < 128 + signal.NSIG:
            with contextlib.suppress(ValueError):  # Docker says a signal as 128+N, as a shell
                return None, signal.Signals(code - 128).name
        return code, None

    async def signal_all(number: int) -> None:
        try:
            await env._call(_reach, env._base)  # else the SDK leaks a socket in its attempt
        except RunEnvironmentError:
            return  # the daemon is gone, and the run with it as far as we can reach
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


def _labelled(client: docker.DockerClient, value: str | None = None) -> list[dict[str, Any]]:
    """The containers carrying our label (with ``value``), as the daemon lists them: a
    summary each, read in one call (the SDK's ``list`` reads each container again, and fails
    on one removed meanwhile). Blocking."""
    label = LABEL if value is None else f"{LABEL}={value}"
    return list(client.api.containers(all=True, filters={"label": label}))


def _remove_by_id(client: docker.DockerClient, container: str) -> None:
    with contextlib.suppress(docker.errors.NotFound):
        client.api.remove_container(container, force=True)


def _sweep(client: docker.DockerClient) -> None:
    """Remove the containers of environments whose process is gone (blocking)."""
    for summary in _labelled(client):
        owner = (summary.get("Labels") or {}).get(OWNER, "")
        pid = owner.partition(":")[0]
        if pid.isdigit() and _owner_tag(int(pid)) == owner:
            continue  # its maker lives
        with contextlib.suppress(docker.errors.DockerException):
            _remove_by_id(client, summary["Id"])


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
