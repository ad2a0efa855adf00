"""The sandbox environment: bubblewrap namespaces, a seccomp filter and a cgroup per run."""

from __future__ import annotations

import atexit
import contextlib
import dataclasses
import os
import shutil
import time
import weakref
from dataclasses import dataclass

import anyio

from ..._errors import EnvironmentUnavailableError, InvalidOptionsError, RunEnvironmentError
from ..._handles import ProcessHandle
from ..._languages import get_language
from ..._models import ExecutionOptions, Limits
from ..._process import Outcome, ProcessGroups, supervise
from ..._workspace import default_parent, off_loop, reachable_by_others, soon
from ..base import CommandRunEnvironment, EnvironmentStatus
from ..command import Command
from . import bwrap as bubblewrap
from . import cgroups as _cgroups
from . import mounts, readiness
from .identities import DEFAULT_RANGE, Identities
from .instance import InstanceDirectory, mounted_beneath, new_instance, sweep
from .launch import Sandbox, move_entries
from .launcher import Launcher, LongLived
from .outcomes import DEFAULT_LIMITS, enforceable, too_late, translate
from .pool import Pool, Shape
from .warm import Warm
from .warm import settings as warm_settings
from .workspaces import Execution, Executions

SHELL = get_language("bash")

_OPEN: weakref.WeakSet[SandboxRunEnvironment] = weakref.WeakSet()


@atexit.register
def _close_all() -> None:
    for env in list(_OPEN):
        env.close_now()


@dataclass(frozen=True)
class HeldSandbox:
    """A sandbox started ahead and waiting for a run (see ``prestart``)."""

    pid: int | None
    """bubblewrap's process, or None if it is gone already."""
    slot: str
    """Its directory on the host."""
    cgroup: str | None
    """Its cgroup's directory (the first hierarchy's, on cgroup v1)."""


class SandboxRunEnvironment(CommandRunEnvironment[Execution]):
    """Runs code isolated on this machine, for code you did not write.

    Each run gets its own user, PID, mount, IPC, UTS, cgroup and network namespaces
    (bubblewrap), runs as an unprivileged uid with no capabilities and ``no_new_privs``, under
    a seccomp filter, in a cgroup that bounds its memory and processes, and sees only the
    host's system directories (read-only), a fresh workspace and a bounded ``/tmp``.

    :param network: give the program the host's network (weaker isolation; for installing
        packages inside). Without it the program has only its own loopback (it may serve
        and call itself on 127.0.0.1) and may open no sockets but Unix and IP ones.
    :param limits: defaults for every run's limits (see :class:`Limits`); an execution's
        ``options.limits`` override them field by field.
    :param tmp_dir: where workspaces are made on the host (see ``LocalRunEnvironment``).
    :param kill_grace: seconds between SIGTERM and SIGKILL when a run is stopped.
    :param bwrap: the bubblewrap program (default: ``bwrap`` on ``PATH``).
    :param prestart: after each run, set up a sandbox for the next run of the same shape
        (command, environment, working directory, limits) in the background, so that it
        skips bubblewrap's set-up. Each sandbox still serves one run only.
    :param cgroups: bound memory and processes with a cgroup per run where this machine
        offers one; False uses the fallback (rlimits, and a bounded file system mounted on
        each workspace), as on a machine without usable cgroup controllers.
    :param identities: when running as root, the host uids (and gids) the executions run
        as, one each; none of them may belong to an account of this machine.
    :param warm: run Python programs (``python3 script args``) through fork servers that
        have the interpreter started and common modules imported: each run still gets fresh
        namespaces, a fresh ``/tmp``, ``/dev/shm``, ``/proc`` and workspace, its own cgroup,
        no capabilities and the seccomp filter (needs cgroups). Default: on, unless
        ``$RUNENV_WARM`` is ``0``.
    :param warm_size: fork servers at most (default: ``$RUNENV_WARM_SIZE``, else two per
        core); each holds an identity.
    :param warm_idle: seconds a fork server may stay idle before it is stopped.
    """

    name = "sandbox"
    cwd_outside = ("/tmp",)
    file_roots = ("/tmp", "/mnt")

    def __init__(
        self,
        *,
        network: bool = False,
        limits: Limits | None = None,
        tmp_dir: str | None = None,
        kill_grace: float = 0.5,
        bwrap: str | None = None,
        prestart: bool = True,
        cgroups: bool = True,
        identities: range = DEFAULT_RANGE,
        warm: bool | None = None,
        warm_size: int | None = None,
        warm_idle: float = 60.0,
    ) -> None:
        super().__init__()
        self.network = network
        self.limits = limits.over(DEFAULT_LIMITS) if limits is not None else DEFAULT_LIMITS
        self._kill_grace = kill_grace
        self._bwrap = bwrap or shutil.which("bwrap")
        self._identities = Identities(identities) if os.geteuid() == 0 else None
        self._tmp_dir = tmp_dir or default_parent(shared=self._identities is not None)
        if self._identities is not None and not reachable_by_others(self._tmp_dir):
            raise InvalidOptionsError(
                f"tmp_dir {self._tmp_dir!r} must be reachable by the sandbox's uids: "
                "a directory on the way to it is closed to other users"
            )
        self._cgroups = _cgroups.detect() if cgroups else None
        # Without cgroups nothing bounds a workspace but a file system of its own; such a
        # workspace is bound into its sandbox directly, so nothing is started ahead.
        self._mount_workspaces = self._cgroups is None
        self.prestart = prestart and not self._mount_workspaces
        self._instance = new_instance()
        self._home = InstanceDirectory(self._tmp_dir, self._instance)
        self._executions = Executions(self._home, self._identities, mount=self._mount_workspaces)
        self._keeper = _cgroups.Keeper(self._cgroups, self._instance)
        self._launcher = Launcher(
            home=self._home,
            executions=self._executions,
            keeper=self._keeper,
            network=network,
            prlimit=shutil.which("prlimit", path=bubblewrap.PATH),
            cgroups_in_use=self._cgroups is not None,
        )
        self._groups = ProcessGroups()
        python = shutil.which("python3", path=bubblewrap.PATH)
        warm, warm_size = warm_settings(warm, warm_size)
        self._warm = (
            Warm(
                home=self._home,
                executions=self._executions,
                keeper=self._keeper,
                network=network,
                python=python,
                env=self._base_env(),
                size=warm_size,
                groups=self._groups,
                kill_grace=kill_grace,
                idle=warm_idle,
            )
            if warm and python is not None and not self._mount_workspaces
            else None
        )
        self._pool = Pool(
            self._start_ahead, lambda sandbox: self._launcher.dispose(sandbox, back_to=None)
        )
        _OPEN.add(self)
        self._problem: str | None = None
        self._checked = False

    # -- readiness ------------------------------------------------------------------------
    async def _check(self) -> str | None:
        """Why the sandbox cannot run here, or None; a real run decides, once."""
        if self._checked:
            return self._problem
        self._problem = await off_loop(
            readiness.static_problem,
            self._bwrap,
            self.network,
            self._mount_workspaces,
            self._identities,
        )
        if self._problem is None:
            await off_loop(sweep, self._tmp_dir, self._cgroups)  # what dead owners left
            self._launcher.static = await off_loop(
                bubblewrap.probe_static_arguments, self._bwrap, self.network
            )
            if self._warm is not None:
                self._warm.static = self._launcher.static
            workspace = await self._workspace()
            try:
                probe = self._command(
                    ["/bin/sh", "-c", "exit 0"], workspace, ExecutionOptions(), SHELL
                )
                outcome = await self._sandboxed(probe, workspace, prestart=False)
                if outcome.exit_code != 0:
                    self._problem = "a test run failed: " + outcome.stderr.decode(errors="replace")
            except RunEnvironmentError as exc:
                self._problem = str(exc)
            finally:
                await workspace.remove()
        self._checked = True
        return self._problem

    async def is_ready(self) -> bool:
        return await self._check() is None and await super().is_ready()

    async def status(self) -> EnvironmentStatus:
        problem = await self._check()
        base = await super().status()
        notes = [self.limits_note()]
        if problem is not None:  # no language runs, whatever tools there are
            languages = tuple(
                dataclasses.replace(lang, available=False, missing=f"no sandbox: {problem}")
                for lang in base.languages
            )
            return dataclasses.replace(
                base, ready=False, reason=problem, notes=tuple(notes), languages=languages
            )
        return dataclasses.replace(base, notes=tuple(notes))

    def limits_note(self) -> str:
        """How limits are enforced here, for ``runenv doctor``."""
        return readiness.limits_note(self._cgroups)

    async def _which(self, program: str) -> str | None:
        if program == "{python}":
            return None  # this process's interpreter may live where the sandbox cannot see
        return shutil.which(program, path=bubblewrap.PATH)

    # -- workspace ------------------------------------------------------------------------
    async def _workspace(self) -> Execution:
        return self._executions.open()

    # -- running --------------------------------------------------------------------------
    async def _run(self, command: Command, workspace: Execution) -> Outcome:
        problem = await self._check()
        if problem is not None:
            raise EnvironmentUnavailableError(f"the sandbox cannot run here: {problem}")
        env = self._base_env()
        env.update(command.env)
        return await self._sandboxed(dataclasses.replace(command, env=env), workspace)

    @staticmethod
    def _base_env() -> dict[str, str]:
        return {"PATH": bubblewrap.PATH, "HOME": bubblewrap.WORKDIR, "LANG": "C.UTF-8",
                "TMPDIR": "/tmp", "NODE_PATH": bubblewrap.NODE_PATH}  # fmt: skip

    async def _sandboxed(
        self, command: Command, execution: Execution, prestart: bool = True
    ) -> Outcome:
        """Run ``command`` in a sandbox: one started ahead for its shape, or a new one; the
        wait for either counts against the command's deadline."""
        shape = Shape(
            argv=command.argv,
            env=tuple(command.env.items()),
            cwd=command.cwd,
            limits=enforceable(command.limits.over(self.limits)),
        )
        # The first stage may take a sandbox started ahead, and its identity; a later stage
        # (the run after a compile step) runs as the identity the first one had.
        binds = execution.binds()  # areas beyond the workspace: a sandbox of its own
        warm = self._warm is not None and self._warm.fits(command, shape.cwd)
        if warm and prestart and execution.user is None and not binds:
            assert self._warm is not None
            outcome = await self._warm.run(command, execution, shape.limits)
            if outcome is not None:
                return outcome
        first = execution.user is None
        ahead = first and not binds
        sandbox = await self._pool.claim(shape, command.remaining()) if ahead else None
        if sandbox is not None:
            execution.user, sandbox.holds_identity = sandbox.user, False
        elif first:
            execution.user = self._executions.acquire()
        await soon(self._executions.prepare, execution, shape.limits)
        if sandbox is None:
            try:
                sandbox = await self._launcher.launch(
                    shape,
                    user=execution.user,
                    staging=execution.host,
                    direct=execution.mounted,
                    timeout=max(command.remaining(), 0.001),
                    binds=binds,
                )
            except EnvironmentUnavailableError:
                if command.remaining() > 0:
                    raise
                return too_late(command)  # its time went on waiting for a sandbox
        else:
            await soon(move_entries, execution.host, sandbox.slot)
        assert sandbox.started is not None
        try:
            sandbox.started.at = time.perf_counter()
            outcome = await supervise(
                sandbox.started,
                timeout=command.remaining(),
                stdin=command.stdin,
                max_output_bytes=command.max_output_bytes,
                on_stdout=command.on_stdout,
                on_stderr=command.on_stderr,
                kill_grace=self._kill_grace,
                groups=self._groups,
                release=sandbox.release,
            )
        finally:
            usage = await self._launcher.dispose(sandbox, back_to=execution.host)
        if prestart and self.prestart and not binds and not warm:
            # (after the run, so that it does not compete with it; a shape that runs warm
            # has its fork servers instead)
            self._pool.prestart(shape)
        if not sandbox.made:
            message = outcome.stderr.decode(errors="replace").strip()
            raise EnvironmentUnavailableError(f"the sandbox did not start: {message}")
        return translate(outcome, usage)

    async def _start_ahead(self, shape: Shape) -> Sandbox | None:
        """A sandbox for the next run of ``shape``, holding an identity of its own."""
        try:
            user = self._executions.acquire()
            return await self._launcher.launch(
                shape, user=user, staging=None, timeout=30, held=True
            )
        except Exception:
            return None  # the next run starts its own sandbox, and reports what goes wrong

    # -- long-lived processes (the E2B-compatible service) -------------------------------
    async def open_process(self, spec: LongLived) -> ProcessHandle:
        """Start a long-lived process (its ``user`` from :meth:`acquire_identity`) and let
        it run; the handle drives it to its end."""
        problem = await self._check()
        if problem is not None:
            raise EnvironmentUnavailableError(f"the sandbox cannot run here: {problem}")
        limits = spec.limits.over(self.limits)
        return await self._launcher.open_process(dataclasses.replace(spec, limits=limits))

    def acquire_identity(self) -> tuple[int, int] | None:
        """A host identity of its own for a long-lived user of :meth:`open_process` (None
        when not running as root: everything runs as this process's user).

        :raises EnvironmentUnavailableError: if every identity is in use.
        """
        return self._executions.acquire()

    def release_identity(self, identity: tuple[int, int] | None) -> None:
        """Give back an identity once none of its processes and files are left."""
        self._executions.release(identity)

    def private_directory(self, prefix: str) -> str:
        """A new directory on the host for a user of :meth:`open_process`, private to this
        process's user, swept with the environment's own after a crash; the caller removes
        it (before :meth:`cleanup`)."""
        return self._home.mkdtemp(prefix)

    # -- what it holds (for monitoring, and for tests that look for leaks) ----------------
    @property
    def instance(self) -> str:
        """The name of this environment's host directory (``runenv-<instance>`` in
        ``tmp_dir``) and the prefix of its cgroups' names."""
        return self._instance

    def uids_used(self) -> frozenset[int]:
        """Every host uid this environment has run something as (empty when not root)."""
        return frozenset(self._identities.used) if self._identities is not None else frozenset()

    def held(self) -> tuple[HeldSandbox, ...]:
        """The sandboxes started ahead and waiting for a run."""
        return tuple(
            HeldSandbox(
                pid=s.started.pid if s.started is not None and s.started.alive() else None,
                slot=s.slot,
                cgroup=str(s.cgroup.directories[0]) if s.cgroup is not None else None,
            )
            for s in self._pool.held.values()
        )

    def servers(self) -> tuple[HeldSandbox, ...]:
        """The fork servers of warm runs (see ``warm``), idle or serving a run; a server's
        cgroup is that of the run it has set up ahead."""
        if self._warm is None:
            return ()
        found = []
        for server in self._warm.servers:
            ahead = server.ahead
            cgroup = ahead.cgroup if ahead is not None else None
            found.append(
                HeldSandbox(
                    pid=server.process.pid if server.process is not None else None,
                    slot=server.slot,
                    cgroup=str(cgroup.directories[0]) if cgroup is not None else None,
                )
            )
        return tuple(found)

    async def warm_up(self, servers: int = 1, timeout: float = 30) -> int:
        """Start fork servers for warm runs until ``servers`` are ready (at most the pool's
        size) or ``timeout`` passes; how many are ready. Runs start them as they come too:
        this only saves the first runs the wait."""
        if self._warm is None or await self._check() is not None:
            return 0
        with anyio.move_on_after(timeout):
            return await self._warm.warm_up(servers)
        return len(self._warm.servers)

    @property
    def warm_runs(self) -> int:
        """How many runs fork servers have served."""
        return self._warm.runs if self._warm is not None else 0

    async def settle(self, timeout: float = 10) -> bool:
        """Wait up to ``timeout`` seconds for the work done in the background (sandboxes
        being started ahead or disposed of, fork servers starting) to end; whether it did."""
        with anyio.move_on_after(timeout):
            await self._pool.settle()
            if self._warm is not None:
                await self._warm.settle()
            return True
        return False

    async def cleanup(self) -> None:
        """Kill every sandbox still running or started ahead, and remove every workspace,
        slot and cgroup left."""
        if self._warm is not None:
            await self._warm.close()
        await self._pool.close()
        self._groups.kill_all()
        await self._keeper.close()
        await self._executions.close_all()
        await self._launcher.close()
        await off_loop(self._home.close)

    def close_now(self) -> None:
        """:meth:`cleanup` for when no event loop runs (at interpreter exit)."""
        if self._warm is not None:
            self._warm.close_now()
        self._pool.close_now()
        self._groups.kill_all()
        with contextlib.suppress(OSError):
            self._executions.unmount_now()
            for point in mounted_beneath(self._home.path):
                mounts.unmount(point)
            self._home.close()
        self._keeper.close_now()
