"""The SSH environment: code runs on a machine you can log in to, through ``asyncssh``.

One connection serves every run: each run is a channel (an exec), and a run's files travel
over one SFTP session. The runs at once are bounded by ``sessions`` (OpenSSH's
``MaxSessions``, 10 by default, counts the SFTP session too); a connection that dropped is
made again by the next run.

Every run has a private directory under the remote's temporary directory (or ``root``),
mode 700, named at random, made by a short command that leaves a watchdog beside it, and
removed after the run, also after a timeout or a cancellation. Its program is started by a
small ``sh`` wrapper that marks it (the variable ``RUNENV_RUN``, which its children
inherit), changes to its directory and ``exec``\\ s it: the program is the channel's own
process, and the process group OpenSSH made for it.

Killing on the remote. Closing a channel does not end its program. A run stopped early
(timeout, cancellation, ``cleanup()``) is signalled through its channel (OpenSSH sends the
signal to the program's process group). When a program ends, every process of the remote
user that carries its run's mark is killed (double-forked daemons included, and whatever
holds its output open), and again before its directory is removed. When the connection
ends first (this process killed, the network down, the server restarted), the watchdog
kills the run and removes its directory within a second.

With ``sandbox`` (by default when the remote has a bubblewrap that works for the user),
each program runs in bubblewrap on the remote: no network, its own PID namespace (all of
it dies with the run), the system directories read-only, its directory and a private
``/tmp`` writable, the user's home out of sight. Without it, a program runs with the remote
user's permissions: it can do what that user can, and a program that clears its own
variables escapes the mark.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import getpass
import os
import posixpath
import re
import shlex
import signal
import socket
import stat
import uuid
import warnings
from collections import deque
from collections.abc import Mapping, Sequence
from typing import Any

import anyio

with warnings.catch_warnings():
    # asyncssh names cryptography's DSA key types when it is imported, and cryptography 51
    # deprecated them: a warning about keys this environment never offers (OpenSSH dropped
    # DSA), which users would otherwise see on every import.
    warnings.filterwarnings("ignore", "DSA is deprecated", UserWarning)
    import asyncssh
    from asyncssh.config import SSHClientConfig

from .._errors import (
    AuthenticationError,
    EnvironmentUnavailableError,
    HostKeyError,
    InvalidOptionsError,
    RunEnvironmentError,
    UnreachableError,
)
from .._languages import LANGUAGES
from .._models import Limits
from .._process import Outcome
from .._remote import RemoteCalls, Sink, supervise_remote
from .base import CommandRunEnvironment, EnvironmentStatus
from .command import Command, rlimit_options
from .sandbox.bwrap import ETC, NETWORK_ETC, VAR
from .workspace import Workspace

MARKER = "RUNENV_RUN"
"""Set in every program's environment (inherited by what it starts): how a run's processes
are found on the remote."""
WATCH = "RUNENV_WATCH"
"""Set in a run's watchdog's environment."""
SESSIONS = 10
"""OpenSSH's default ``MaxSessions``: channels one connection may have open at once."""
SYSTEM = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/opt")
"""What a sandboxed program sees of the remote's file system (read-only), with the files of
/etc and /var that the local sandbox shows its programs."""
SANDBOX_SIGNALS = "HUP INT QUIT TERM USR1 USR2 ALRM PIPE"
"""Signals bubblewrap ignores on the remote, so that a signal for the run reaches the
program (which gets them back by default through ``env --default-signal``) and does not
end bubblewrap and all it holds at once."""
SIGNALS = frozenset({"ABRT", "ALRM", "FPE", "HUP", "ILL", "INT", "KILL", "PIPE", "QUIT",
                     "SEGV", "TERM", "USR1", "USR2"})  # fmt: skip
"""The signals SSH names (RFC 4254), which OpenSSH delivers to a program's process group."""
FAILED = 125
PROBE = "runenv-ssh-probe"
"""The first line of the probe's answer."""
MARK = "runenv-ssh:"
"""Starts what the wrapper says on stderr when it cannot start a program (exit code 125)."""
MAX_FETCH = 64 << 20
"""The largest file ``fetch_files`` brings back."""
OPEN_RETRY = 2.0
"""Seconds a refused channel is tried again (see ``SSHRunEnvironment._open``)."""
KILL_WAIT = 2.0
"""Seconds to wait, after killing a run at its deadline, for its end and last output."""
DRAIN = 5.0
"""Seconds of silence, after a program ended, before its output is taken as complete where
its watchdog could not kill what it left holding its output open."""
NOISE = 64 << 10
"""The most a login script may print before a run's wrapper starts (more: kept as output)."""
PENDING = 1 << 20
"""Bytes of output read from a channel but not yet taken, past which reading pauses."""
IN_FLIGHT = 256 << 10
"""Bytes of standard input sent and not yet taken by the server past which a run's writer
waits: more than OpenSSH takes before it acknowledges (3 packets of 32 KiB)."""
NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")

# Kills every process of the user with a variable that matches "$1" (a regular expression
# for NAME=value, whole), again until none is left (a forking program's children appear
# between two scans).
_KILL = (
    "k() { i=0; while [ $i -lt 50 ]; do"
    ' p=$(grep -lszx -- "$1" /proc/[0-9]*/environ | cut -d/ -f3);'
    ' [ -n "$p" ] || return 0; kill -KILL $p 2>/dev/null; i=$((i+1)); done; };'
)
_REMOVE = '[ -L "$1" ] || chmod -R u+rwx -- "$1" 2>/dev/null; rm -rf -- "$1" "$1.env";'
# The workspace's watchdog ($1 the connection's sshd process, $2 the pattern of the
# workspace's runs, $3 its directory): when the connection ends, it kills the runs and
# removes the directory.
_WATCHDOG = (
    _KILL + ' tail --pid="$1" -s 1 -f /dev/null 2>/dev/null'
    ' || while kill -0 "$1" 2>/dev/null; do sleep 1; done;'
    ' k "$2"; shift 2; ' + _REMOVE
)
# Makes a run's directory ($1) and leaves its watchdog ($2 its mark, $3 the pattern of its
# runs), in a session of its own (a signal for a run's process group does not reach it).
_MAKE = (
    'mkdir -m 700 -- "$1" || exit 1;'
    f' {WATCH}="$2" setsid sh -c {shlex.quote(_WATCHDOG)} runenv-watch "$PPID" "$3" "$1"'
    " </dev/null >/dev/null 2>&1 &"
)
# When a program ($1) ends, what it left (which may hold its output open) is killed ($2
# the pattern of its stage).
_AFTER = (
    _KILL + ' tail --pid="$1" -s 0.1 -f /dev/null 2>/dev/null'
    ' || while kill -0 "$1" 2>/dev/null; do sleep 0.1; done;'
    ' k "$2"'
)
# The wrapper: $1 the run's directory, $2 the stage's mark, $3 its pattern, $4 its working
# directory, then argv.
_WRAPPER = (
    "d=$1 t=$2 c=$4;"
    ' printf "\\036runenv:%s\\036" "$t"; printf "\\036runenv:%s\\036" "$t" >&2;'
    f' {WATCH}=$t setsid sh -c {shlex.quote(_AFTER)} runenv-after "$$" "$3"'
    " </dev/null >/dev/null 2>&1 &"
    " shift 4;"
    " umask 077;"
    ' if [ -f "$d.env" ]; then set -a; . "$d.env" || exit 125; set +a; rm -f -- "$d.env"; fi;'
    f" {MARKER}=$t; export {MARKER};"
    f' cd -- "$c" || {{ echo "{MARK} no directory $c" >&2; exit {FAILED}; }};'
    ' exec "$@"'
)


@dataclasses.dataclass(frozen=True)
class _Probe:
    """What one batched probe found on the remote."""

    programs: dict[str, str | None]
    tmp: str
    system: tuple[tuple[str, str | None], ...]  # (directory, link target or None)
    bwrap: bool
    shown: tuple[str, ...]  # files of /etc and /var a sandboxed program sees
    default_signal: bool  # env --default-signal works


class SSHRunEnvironment(CommandRunEnvironment["SSHWorkspace"]):
    """Runs code on a remote machine over SSH.

    :param host: the host (a name, an address or a ``~/.ssh/config`` alias), optionally
        ``user@host:port``; default: ``$RUNENV_SSH_HOST``.
    :param port: default: the configuration's, else 22 (``$RUNENV_SSH_PORT``).
    :param user: default: the configuration's, else this user (``$RUNENV_SSH_USER``).
    :param key_file: private key file(s) (``$RUNENV_SSH_KEY``); default: the agent and
        ``~/.ssh``'s keys, as ``ssh`` uses them.
    :param password: for password logins.
    :param known_hosts: the known-hosts file (``$RUNENV_SSH_KNOWN_HOSTS``); default:
        ``~/.ssh/known_hosts``. Host keys are always checked unless ``verify_host_key``
        is false.
    :param verify_host_key: false accepts any host key (an explicit opt-out, for throwaway
        test machines only).
    :param jump: jump host(s), ``[user@]host[:port]``, comma-separated, as ``ssh -J``
        (``$RUNENV_SSH_JUMP``); a ``ProxyJump`` of the configuration is used too.
    :param config: OpenSSH client configuration file(s); default: ``~/.ssh/config``.
    :param root: the remote directory runs' directories are made in (``$RUNENV_SSH_ROOT``);
        default: the remote's ``$TMPDIR``, else ``/tmp``.
    :param sandbox: run each program in bubblewrap on the remote: True requires it, False
        never, None (default; ``$RUNENV_SSH_SANDBOX``) when the remote has it.
    :param network: give sandboxed programs the remote's network.
    :param limits: the defaults of every run: CPU time, open files, file size (``disk``),
        processes (counted over all the remote user's processes) and memory (as address
        space), set with ``prlimit`` on the remote; none by default.
    :param sessions: channels the connection may have open at once (the server's
        ``MaxSessions``, with the SFTP session among them).
    :param connect_timeout: seconds to connect and log in.
    :param kill_grace: seconds between SIGTERM and SIGKILL when a run is stopped.
    """

    name = "ssh"

    def __init__(
        self,
        host: str | None = None,
        *,
        port: int | None = None,
        user: str | None = None,
        key_file: str | Sequence[str] | None = None,
        password: str | None = None,
        known_hosts: str | None = None,
        verify_host_key: bool = True,
        jump: str | None = None,
        config: str | Sequence[str] | None = None,
        root: str | None = None,
        sandbox: bool | None = None,
        network: bool = False,
        limits: Limits | None = None,
        sessions: int = SESSIONS,
        connect_timeout: float = 15.0,
        kill_grace: float = 0.5,
    ) -> None:
        super().__init__()
        given = host or os.environ.get("RUNENV_SSH_HOST") or ""
        target_user, target, target_port = _split(given)
        self.host = target
        self.user = user or target_user or os.environ.get("RUNENV_SSH_USER") or None
        port_text = os.environ.get("RUNENV_SSH_PORT")
        self.port = port or target_port or (int(port_text) if port_text else None)
        key = key_file or os.environ.get("RUNENV_SSH_KEY")
        self.key_files = [key] if isinstance(key, str) else list(key or [])
        self.password = password
        self.known_hosts = known_hosts or os.environ.get("RUNENV_SSH_KNOWN_HOSTS") or None
        self.verify_host_key = verify_host_key
        self._default_known_hosts = os.path.expanduser("~/.ssh/known_hosts")
        self.jump = jump or os.environ.get("RUNENV_SSH_JUMP") or None
        self.config = [config] if isinstance(config, str) else list(config or [])
        self.root = root or os.environ.get("RUNENV_SSH_ROOT") or None
        if sandbox is None and os.environ.get("RUNENV_SSH_SANDBOX"):
            sandbox = os.environ["RUNENV_SSH_SANDBOX"].lower() in ("1", "true", "yes")
        self.sandbox = sandbox
        self.network = network
        self.limits = limits or Limits()
        if sessions < 2:
            raise InvalidOptionsError(f"sessions must be 2 or more, not {sessions}")
        self.sessions = sessions
        self.connect_timeout = connect_timeout
        self.kill_grace = kill_grace
        self.instance = uuid.uuid4().hex[:16]
        """Every run's mark (``RUNENV_RUN``) begins with it."""
        self._runs = 0
        self._conn: asyncssh.SSHClientConnection | None = None
        self._jumps: list[asyncssh.SSHClientConnection] = []
        self._sftp: asyncssh.SFTPClient | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._connecting = anyio.Lock()
        self._channels = anyio.CapacityLimiter(sessions - 1)  # one is the SFTP session's
        self._probe: _Probe | None = None
        self._probing = anyio.Lock()

    # -- the connection --------------------------------------------------------------------
    @property
    def target(self) -> str:
        """``user@host:port`` as far as it is known, for messages."""
        where = f"{self.user}@{self.host}" if self.user else self.host
        return f"{where}:{self.port}" if self.port else where

    @property
    def sandboxed(self) -> bool | None:
        """Whether programs run in bubblewrap on the remote (None until probed)."""
        if self._probe is None:
            return self.sandbox
        return self._probe.bwrap if self.sandbox is None else self.sandbox

    def _options(self) -> dict[str, Any]:
        options: dict[str, Any] = {"connect_timeout": self.connect_timeout,
                                   "keepalive_interval": 15, "keepalive_count_max": 3}  # fmt: skip
        if self.key_files:
            options["client_keys"] = self.key_files
        if self.password is not None:
            options["password"] = self.password
        if not self.verify_host_key:
            options["known_hosts"] = None
        elif self.known_hosts:
            options["known_hosts"] = self.known_hosts
        if self.config:
            options["config"] = self.config
        return options

    async def _connect_to(
        self, host: str, port: int | None, user: str | None, tunnel: Any
    ) -> asyncssh.SSHClientConnection:
        options = self._options()
        if port:
            options["port"] = port
        if user:
            options["username"] = user
        if tunnel is not None:
            options["tunnel"] = tunnel
        where = f"{user + '@' if user else ''}{host}{':' + str(port) if port else ''}"
        try:
            return await asyncssh.connect(host, **options)
        except asyncssh.HostKeyNotVerifiable as exc:
            raise HostKeyError(await self._host_key_problem(host, port, where, exc)) from None
        except asyncssh.PermissionDenied:
            raise AuthenticationError(
                f"{where} refused the login: no key, agent identity or password it accepts"
            ) from None
        except socket.gaierror as exc:
            raise UnreachableError(f"cannot resolve {host!r}: {exc.strerror}") from None
        except ConnectionRefusedError:
            raise UnreachableError(f"{where} refused the connection: is sshd running?") from None
        except TimeoutError:
            raise UnreachableError(
                f"{where} did not answer within {self.connect_timeout:g} s"
            ) from None
        except (OSError, asyncssh.Error) as exc:
            raise UnreachableError(f"cannot connect to {where}: {exc}") from None

    async def _host_key_problem(
        self, host: str, port: int | None, where: str, exc: BaseException
    ) -> str:
        """Whether the host's key changed or was never known, in words a user acts on."""
        path = self.known_hosts or self._default_known_hosts
        name = host if not port or port == 22 else f"[{host}]:{port}"
        listed = False
        with contextlib.suppress(OSError, ValueError):
            listed = any(
                name in line.split(None, 1)[0].split(",")
                for line in (await anyio.Path(path).read_text()).splitlines()
                if line.strip() and not line.startswith("#")
            )
        if listed:
            return (
                f"the host key of {where} does not match the one in {path}: it changed, or"
                " someone is in between (check it, then remove the old entry)"
            )
        return (
            f"the host key of {where} is not known ({path} has no entry for {name}): add it"
            f" (ssh-keyscan) after checking it; {exc}"
        )

    async def connection(self) -> asyncssh.SSHClientConnection:
        """The connection, made on first use and again after it dropped.

        :raises UnreachableError, AuthenticationError, HostKeyError: saying why it cannot
            be made; EnvironmentUnavailableError without a host.
        """
        async with self._connecting:
            loop = asyncio.get_running_loop()
            if self._loop is not loop:  # one made in another event loop (runenv serve
                # asks for the status in one of its own first) is no use here: its sockets
                # are closed as they are, since that loop cannot close them any more
                for each in (self._conn, *self._jumps):
                    if each is not None:
                        with contextlib.suppress(OSError, AttributeError):
                            each.get_extra_info("socket").close()
                self._conn, self._sftp, self._jumps, self._loop = None, None, [], loop
            if self._conn is not None and not self._conn.is_closed():
                return self._conn
            if not self.host:
                raise EnvironmentUnavailableError(
                    "no host to connect to: give SSHRunEnvironment(host=...) or set RUNENV_SSH_HOST"
                )
            await self._disconnect()
            tunnel: Any = None
            jumps = []
            route = self.jump or await anyio.to_thread.run_sync(self._configured_jump)
            try:
                for hop in (route or "").split(","):
                    if hop.strip():
                        user, host, port = _split(hop.strip())
                        tunnel = await self._connect_to(host, port, user, tunnel)
                        jumps.append(tunnel)
                conn = await self._connect_to(self.host, self.port, self.user, tunnel)
                try:
                    self._sftp = await conn.start_sftp_client()
                except (OSError, asyncssh.Error) as exc:
                    conn.close()
                    raise UnreachableError(f"{self.target} has no SFTP: {exc}") from None
            except BaseException:
                for each in jumps:
                    each.close()
                raise
            self._conn, self._jumps = conn, jumps
            return conn

    def _configured_jump(self) -> str | None:
        """The configuration's ``ProxyJump`` for the host (its hops connect with this
        environment's keys and known hosts, as the host does). Blocking: reads files."""
        paths = self.config or [
            p for p in [os.path.expanduser("~/.ssh/config")] if os.access(p, os.R_OK)
        ]
        if not paths:
            return None
        try:
            config = SSHClientConfig.load(
                None, paths, False, False, False, getpass.getuser(), self.user or (),
                self.host, self.port or (),
            )  # fmt: skip
        except (OSError, asyncssh.Error, ValueError) as exc:
            raise InvalidOptionsError(f"the SSH configuration {paths}: {exc}") from None
        jump = config.get("ProxyJump")
        return None if not jump or str(jump).lower() == "none" else str(jump)

    async def _disconnect(self) -> None:
        conn, self._conn, self._sftp = self._conn, None, None
        jumps, self._jumps = self._jumps, []
        for each in (conn, *reversed(jumps)):
            if each is not None:
                each.close()
                with anyio.move_on_after(5, shield=True):
                    await each.wait_closed()

    async def _control(
        self, script: str, *args: str, timeout: float = 60, held: bool = False
    ) -> tuple[int, str]:
        """Run ``sh -c script`` on the remote (in a channel of its own); its exit status
        and its output (stdout and stderr). ``held``: the caller holds a channel's place
        already (a workspace, for its removal)."""
        command = " ".join(shlex.quote(a) for a in ("sh", "-c", script, "runenv", *args))
        session = _Channel()
        async with contextlib.nullcontext() if held else self._channels:
            try:
                with anyio.fail_after(timeout):
                    chan = await self._open(session, "exec " + command)
                    try:
                        chan.write_eof()
                        while not (session.closed or (session.exited and session.eof)):
                            session.news.clear()
                            await session.news.wait()
                    finally:
                        chan.close()
                        await chan.wait_closed()
            except TimeoutError:
                raise UnreachableError(f"{self.target} did not answer within {timeout} s") from None
            except (OSError, asyncssh.Error) as exc:
                raise UnreachableError(f"the connection to {self.target} failed: {exc}") from None
        output = b"".join(data for _, data in session.take()).decode(errors="replace")
        return (session.status if session.status is not None else -1), output

    async def _open(self, session: _Channel, line: str) -> asyncssh.SSHClientChannel[bytes]:
        """A channel running ``line`` on the remote, with ``session`` taking what it says.

        A server frees a closed channel's session a moment after the close (OpenSSH counts
        it against ``MaxSessions`` until then): a refusal is tried again for a while before
        it is an error.
        """
        conn = await self.connection()
        delay = 0.005
        deadline = anyio.current_time() + OPEN_RETRY
        while True:
            try:
                chan, _ = await conn.create_session(lambda: session, line, encoding=None)
                return chan
            except asyncssh.ChannelOpenError as exc:
                if anyio.current_time() + delay > deadline:
                    raise EnvironmentUnavailableError(
                        f"{self.target} refused a channel ({exc.reason}): is its MaxSessions"
                        f" below sessions={self.sessions}?"
                    ) from None
            except (OSError, asyncssh.Error) as exc:
                raise UnreachableError(f"the connection to {self.target} failed: {exc}") from None
            await anyio.sleep(delay)
            delay = min(delay * 2, 0.2)

    async def _probed(self) -> _Probe:
        """What the remote has, found with one command (once per environment)."""
        if self._probe is not None:
            return self._probe
        async with self._probing:
            if self._probe is None:
                self._probe = await self._probe_now()
            return self._probe

    async def _probe_now(self) -> _Probe:
        names = sorted({a[0] for lang in LANGUAGES for a in (*lang.compile, *lang.run)
                        if not a[0].startswith("{")} | {"prlimit", "bwrap", "env"})  # fmt: skip
        script = f"echo {PROBE}; "  # what a login script printed before it is not read
        script += "".join(f"command -v {shlex.quote(n)} || echo -; " for n in names)
        script += 'echo "${TMPDIR:-/tmp}"; '
        script += "".join(
            f"if [ -L {d} ]; then readlink {d}; elif [ -d {d} ]; then echo /; else echo -; fi; "
            for d in SYSTEM
        )
        script += (
            "bwrap --unshare-all --die-with-parent --ro-bind / / true >/dev/null 2>&1"
            " && echo bwrap || echo -; env --default-signal true 2>/dev/null && echo yes"
            " || echo -; for p in "
            + " ".join([*(f"/etc/{n}" for n in (*ETC, *NETWORK_ETC)), *(f"/var/{n}" for n in VAR)])
            + '; do [ -e "$p" ] && echo "$p"; done; echo --'
        )
        status, output = await self._control(script)
        lines = output.split("\n")
        if PROBE in lines:
            lines = lines[len(lines) - lines[::-1].index(PROBE) :]
        fixed = len(names) + 1 + len(SYSTEM) + 2
        if status != 0 or len(lines) < fixed + 1 or "--" not in lines[fixed:]:
            raise EnvironmentUnavailableError(
                f"{self.target} did not answer the probe of its tools as a POSIX shell"
                f" (exit status {status}): {output.strip()[:300]}"
            )
        found = {
            name: path.strip() if path.strip() not in ("", "-") else None
            for name, path in zip(names, lines, strict=False)
        }
        rest = lines[len(names) :]
        tmp = rest[0].strip() or "/tmp"
        system = tuple(
            (d, None if line.strip() == "/" else line.strip())
            for d, line in zip(SYSTEM, rest[1 : 1 + len(SYSTEM)], strict=True)
            if line.strip() != "-"
        )
        bwrap = rest[1 + len(SYSTEM)].strip() == "bwrap" and found.get("bwrap") is not None
        default_signal = rest[2 + len(SYSTEM)].strip() == "yes"
        listed = lines[fixed:]
        shown = tuple(line for line in listed[: listed.index("--")] if line.startswith("/"))
        if self.sandbox and not bwrap:
            raise EnvironmentUnavailableError(
                f"sandbox=True, and {self.target} has no bubblewrap that works for this user"
                " (install bubblewrap there; it needs unprivileged user namespaces)"
            )
        if self.sandbox or (self.sandbox is None and bwrap):
            # a sandboxed program sees the system directories only
            def seen(path: str | None) -> bool:
                return path is not None and any(_below_or_at(path, d) for d in SYSTEM)

            found = {name: path if seen(path) else None for name, path in found.items()}
        return _Probe(programs=found, tmp=tmp, system=system, bwrap=bwrap,
                      shown=shown,
                      default_signal=default_signal)  # fmt: skip

    # -- readiness -------------------------------------------------------------------------
    async def is_ready(self) -> bool:
        return (await self.status()).ready

    async def status(self) -> EnvironmentStatus:
        try:
            probe = await self._probed()
        except RunEnvironmentError as exc:
            return EnvironmentStatus(name=self.name, ready=False, reason=str(exc))
        status = await super().status()
        how = (
            "each program in bubblewrap on the remote" if self.sandboxed
            else "programs unsandboxed, with the remote user's permissions"
            + ("" if probe.bwrap else " (the remote has no usable bubblewrap)")
        )  # fmt: skip
        return dataclasses.replace(status, notes=(*status.notes, f"{self.target}: {how}"))

    # -- the pipeline's parts --------------------------------------------------------------
    @property
    def cwd_outside(self) -> tuple[str, ...]:  # type: ignore[override]
        """Unsandboxed, a program may work in any directory of the remote."""
        return () if self.sandboxed else ("/",)

    async def _which(self, program: str) -> str | None:
        if program == "{python}":
            return None
        probe = await self._probed()
        if program not in probe.programs:
            _, output = await self._control(f"command -v {shlex.quote(program)} || true")
            path = output.strip() or None
            probe.programs[program] = path if path and path.startswith("/") else None
        return probe.programs[program]

    async def _workspace(self) -> SSHWorkspace:
        return await self._workspace_for(Limits())

    async def _workspace_for(self, limits: Limits) -> SSHWorkspace:
        probe = await self._probed()
        self._runs += 1
        workspace = SSHWorkspace(
            self,
            posixpath.join(self.root or probe.tmp, f"runenv-{uuid.uuid4().hex}"),
            mark=f"{self.instance}.{self._runs}",
        )
        await self._channels.acquire_on_behalf_of(workspace)  # its runs' and its removal's
        try:
            await workspace.make()
        except BaseException:
            self._channels.release_on_behalf_of(workspace)
            raise
        return workspace

    def _rlimits(self, limits: Limits) -> list[str]:
        """``prlimit`` and its arguments for a run's rlimits.

        :raises InvalidOptionsError: when a limit is asked and the remote has no prlimit.
        """
        args = rlimit_options(limits, memory="--as")
        if not args:
            return []
        prlimit = self._probe.programs.get("prlimit") if self._probe else None
        if prlimit is None:
            raise InvalidOptionsError(f"limits need prlimit (util-linux) on {self.target}")
        return [prlimit, *args, "--"]

    def _sandbox(self, command: Command, workspace: SSHWorkspace) -> list[str]:
        """bubblewrap and its arguments for a sandboxed program."""
        probe = self._probe
        assert probe is not None
        bwrap = probe.programs.get("bwrap") or "bwrap"
        args = [bwrap, "--unshare-all", "--die-with-parent", "--cap-drop", "ALL"]
        if self.network:
            args.append("--share-net")
        for directory, link in probe.system:
            if link is None:
                args += ["--ro-bind", directory, directory]
            else:
                args += ["--symlink", link, directory]
        hidden = () if self.network else tuple(f"/etc/{n}" for n in NETWORK_ETC)
        for path in probe.shown:
            if path not in hidden:
                args += ["--ro-bind", path, path]
        args += ["--proc", "/proc", "--dev", "/dev", "--tmpfs", "/dev/shm", "--tmpfs", "/tmp"]
        args += ["--bind", workspace.path, workspace.path, "--setenv", "HOME", workspace.path,
                 "--setenv", "TMPDIR", "/tmp", "--chdir", command.cwd, "--"]  # fmt: skip
        if probe.default_signal:  # the program gets the signals bubblewrap ignores
            args += [probe.programs.get("env") or "env", "--default-signal"]
        return args

    async def _run(self, command: Command, workspace: SSHWorkspace) -> Outcome:
        for name in command.env:
            if not NAME.fullmatch(name):
                raise InvalidOptionsError(
                    f"environment variable {name!r}: over SSH a name must be letters, digits"
                    " and underscores, not starting with a digit"
                )
        workspace.stages += 1
        mark = f"{workspace.mark}.{workspace.stages}"  # each stage's own: the compile
        # step's leftovers are killed when it ends, while the run may have started
        argv = [*self._rlimits(command.limits.over(self.limits)), *command.argv]
        prelude = ""
        if self.sandboxed:
            argv = [*self._sandbox(command, workspace), *argv]
            if self._probe is not None and self._probe.default_signal:
                prelude = f"trap '' {SANDBOX_SIGNALS}; "
        if command.env:
            lines = "".join(f"{k}={shlex.quote(v)}\n" for k, v in command.env.items())
            await workspace.put(workspace.path + ".env", lines.encode(), mode=0o600)
        line = " ".join(
            shlex.quote(a)
            for a in (
                "sh",
                "-c",
                prelude + _WRAPPER,
                "runenv",
                workspace.path,
                mark,
                _pattern(MARKER, mark),
                command.cwd,
                *argv,
            )
        )
        outcome = await supervise_remote(
            _channel_calls(self, "exec " + line, command, mark),
            command,
            kill_wait=KILL_WAIT,
            kill_grace=self.kill_grace,
        )
        if outcome.exit_code == FAILED and MARK.encode() in outcome.stderr:
            said = outcome.stderr.decode(errors="replace").replace(MARK, "").strip()
            raise InvalidOptionsError(f"the run could not start on {self.target}: {said}")
        code = outcome.exit_code
        if self.sandboxed and code is not None and 128 < code < 128 + signal.NSIG:
            with contextlib.suppress(ValueError):  # bubblewrap says a signal N as 128+N
                name = signal.Signals(code - 128).name
                outcome = dataclasses.replace(outcome, exit_code=None, signal=name)
        return outcome

    async def cleanup(self) -> None:
        """Stop every run of this environment on the remote, remove their directories, and
        close the connection."""
        with anyio.CancelScope(shield=True):
            await self._remove_workspaces()
            if self._conn is not None and not self._conn.is_closed():
                runs = _pattern(MARKER, self.instance, below=True)
                with contextlib.suppress(RunEnvironmentError):
                    await self._control(f'{_KILL} k "$1"', runs, timeout=30)
            async with self._connecting:
                await self._disconnect()
            self._probe = None


class SSHWorkspace(Workspace):
    """A run's directory on the remote, written and read over SFTP: made with mode 700,
    its paths checked without following links (lstat at each step) after the run's
    processes are gone, and removed by a command that first kills what the run left."""

    def __init__(self, env: SSHRunEnvironment, path: str, mark: str) -> None:
        super().__init__(path)
        self.env = env
        self.mark = mark  # of its watchdog, and the stem of its stages' (RUNENV_RUN)
        self.stages = 0
        self._made = False
        self._removed = False

    @property
    def _sftp(self) -> asyncssh.SFTPClient:
        if self.env._sftp is None:
            raise UnreachableError(f"the connection to {self.env.target} dropped")
        return self.env._sftp

    async def make(self) -> None:
        """Make the directory, and leave on the remote its watchdog, which removes it when
        the connection ends (this process killed, the network gone) before its end."""
        status, said = await self.env._control(
            _MAKE, self.path, self.mark, _pattern(MARKER, self.mark, below=True), held=True
        )
        if status != 0:
            raise EnvironmentUnavailableError(
                f"cannot make the run's directory {self.path} on {self.env.target}: {said.strip()}"
            )
        self._made = True

    async def put(self, path: str, content: bytes, mode: int = 0o644) -> None:
        attrs = asyncssh.SFTPAttrs(permissions=mode)
        flags = asyncssh.FXF_WRITE | asyncssh.FXF_CREAT | asyncssh.FXF_EXCL
        try:
            async with self._sftp.open(path, flags, attrs, encoding=None) as handle:
                await handle.write(content)
        except (OSError, asyncssh.Error) as exc:
            raise EnvironmentUnavailableError(
                f"the run's file {path} could not be written on {self.env.target}: {exc}"
            ) from None

    async def _directory(self, relative: str) -> None:
        """Make ``relative`` (and its parents) inside the directory, through no link."""
        current = self.path
        for part in relative.split("/"):
            current = posixpath.join(current, part)
            try:
                attrs = await self._sftp.lstat(current)
            except asyncssh.SFTPNoSuchFile:
                try:
                    await self._sftp.mkdir(current, asyncssh.SFTPAttrs(permissions=0o755))
                except (OSError, asyncssh.Error) as exc:
                    raise EnvironmentUnavailableError(f"cannot make {current}: {exc}") from None
                continue
            except (OSError, asyncssh.Error) as exc:
                raise EnvironmentUnavailableError(f"cannot reach {current}: {exc}") from None
            if attrs.permissions is None or not stat.S_ISDIR(attrs.permissions):
                raise InvalidOptionsError(f"{current} is in the way: it is not a directory")

    async def write(self, files: Mapping[str, bytes]) -> None:
        for path, content in files.items():
            parent = posixpath.dirname(path)
            if parent:
                await self._directory(parent)
            await self.put(posixpath.join(self.path, path), content)

    async def make_dir(self, relative: str) -> None:
        await self._directory(relative)

    async def read(self, paths: Sequence[str]) -> dict[str, bytes]:
        found = {}
        for path in paths:
            content = await self._read(path)
            if content is not None:
                found[path] = content
        return found

    async def _read(self, relative: str) -> bytes | None:
        """The regular file at ``relative``, reached through real directories only."""
        current = self.path
        parts = relative.split("/")
        try:
            for index, part in enumerate(parts):
                current = posixpath.join(current, part)
                attrs = await self._sftp.lstat(current)
                kind = stat.S_IFMT(attrs.permissions or 0)
                last = index == len(parts) - 1
                if kind != (stat.S_IFREG if last else stat.S_IFDIR):
                    return None
            if (attrs.size or 0) > MAX_FETCH:
                return None
            async with self._sftp.open(current, "rb") as handle:
                data = await handle.read(MAX_FETCH + 1)
        except (OSError, asyncssh.Error):
            return None
        return data if isinstance(data, bytes) and len(data) <= MAX_FETCH else None

    async def remove(self) -> None:
        if self._removed:
            return
        self._removed = True
        with anyio.CancelScope(shield=True):
            try:
                if self._made:  # its runs' processes, its watchdog, then its files
                    script = f'{_KILL} k "$2"; k "$3"; {_REMOVE}'
                    runs = _pattern(MARKER, self.mark, below=True)
                    watching = _pattern(WATCH, self.mark, below=True)
                    with contextlib.suppress(RunEnvironmentError):
                        await self.env._control(script, self.path, runs, watching, held=True)
                    # failing, the watchdog removes it when the connection ends
            finally:
                self.env._channels.release_on_behalf_of(self)


class _Channel(asyncssh.SSHClientSession[bytes]):
    """One run's channel: its output kept for the supervisor, its end noted. With
    ``start``, what comes on each stream before it (a login script's greeting) is dropped."""

    def __init__(self, start: bytes = b"") -> None:
        self.start = start
        self.before = {"stdout": b"", "stderr": b""} if start else {}
        self.chan: asyncssh.SSHClientChannel[bytes] | None = None
        self.chunks: deque[tuple[str, bytes]] = deque()
        self.pending = 0
        self.paused = False
        self.news = asyncio.Event()
        self.writable = asyncio.Event()
        self.writable.set()
        self.status: int | None = None
        self.signal: str | None = None
        self.exited = False
        self.eof = False
        self.lost: Exception | None = None
        self.closed = False

    def connection_made(self, chan: asyncssh.SSHClientChannel[bytes]) -> None:
        self.chan = chan

    def data_received(self, data: bytes, datatype: asyncssh.DataType) -> None:
        name = "stderr" if datatype == asyncssh.EXTENDED_DATA_STDERR else "stdout"
        if name in self.before:  # what the login shell said before the wrapper's start
            said = self.before[name] + data
            start = said.find(self.start)
            if start < 0 and len(said) <= NOISE:
                self.before[name] = said
                return
            del self.before[name]
            data = said[start + len(self.start) :] if start >= 0 else said
            if not data:
                return
        self.chunks.append((name, data))
        self.pending += len(data)
        if self.pending > PENDING and not self.paused and self.chan is not None:
            self.paused = True
            self.chan.pause_reading()
        self.news.set()

    def eof_received(self) -> bool:
        for name, said in self.before.items():  # no start came: everything is the answer
            self.chunks.append((name, said))
        self.before.clear()
        self.eof = True
        self.news.set()
        return False

    def exit_status_received(self, status: int) -> None:
        self.status, self.exited = status, True
        self.news.set()

    def exit_signal_received(self, signal: str, core_dumped: bool, msg: str, lang: str) -> None:
        self.signal, self.exited = "SIG" + signal, True
        self.news.set()

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost, self.closed = exc, True
        self.writable.set()
        self.news.set()

    def pause_writing(self) -> None:
        self.writable.clear()

    def resume_writing(self) -> None:
        self.writable.set()

    def take(self) -> list[tuple[str, bytes]]:
        taken = list(self.chunks)
        self.chunks.clear()
        self.pending = 0
        if self.paused and self.chan is not None:
            self.paused = False
            self.chan.resume_reading()
        return taken


def _start(mark: str) -> bytes:
    """What the wrapper of the stage ``mark`` writes first on stdout and on stderr."""
    return f"\x1erunenv:{mark}\x1e".encode()


def _channel_calls(env: SSHRunEnvironment, line: str, command: Command, mark: str) -> RemoteCalls:
    """One run's channel, as the remote supervisor drives it."""
    session = _Channel(start=_start(mark))
    state: dict[str, Any] = {}

    async def start(sink: Sink) -> None:
        state["sink"] = sink
        chan = await env._open(session, line)
        state["chan"] = chan
        state["window"] = getattr(chan, "_send_window", 0)  # the server's, before any input
        if command.stdin is None:
            chan.write_eof()

    async def wait() -> tuple[int | None, str | None]:
        sink = state["sink"]
        while True:
            for name, data in session.take():
                await sink(name, data)
            if session.closed or (session.exited and session.eof):
                break
            session.news.clear()
            if session.exited:  # output a process it left holds open ends the run soon
                with anyio.move_on_after(DRAIN):
                    await session.news.wait()
                if not session.news.is_set() and not session.chunks:
                    break
            else:
                await session.news.wait()
        for name, data in session.take():
            await sink(name, data)
        if not session.exited:
            raise UnreachableError(
                f"the connection to {env.target} dropped during the run"
                + (f" ({session.lost})" if session.lost else "")
                + "; the remote's watchdog kills the run"
            )
        return (None, session.signal) if session.signal else (session.status, None)

    async def signal_all(number: int) -> None:
        chan = state.get("chan")
        name = signal.Signals(number).name.removeprefix("SIG")
        if chan is not None and not session.closed and name in SIGNALS:
            with contextlib.suppress(OSError, asyncssh.Error):
                chan.send_signal(name)

    async def kill() -> None:
        await signal_all(signal.SIGKILL)

    async def terminate() -> None:
        await signal_all(signal.SIGTERM)

    def in_flight() -> int:
        """Input sent and not yet taken by the server (its window, 2 MiB with OpenSSH, takes
        it whether or not the program reads), or waiting here for the window."""
        chan = state["chan"]
        window = getattr(chan, "_send_window", None)
        if window is None:
            return 0
        return int(state["window"] - window + chan.get_write_buffer_size())

    async def send(data: bytes) -> None:
        chan = state["chan"]
        if session.closed:
            return
        with contextlib.suppress(OSError, asyncssh.Error):
            chan.write(data)
        await session.writable.wait()
        # a program that reads nothing keeps the rest waiting here, as a pipe would
        while in_flight() > IN_FLIGHT and not session.closed:  # noqa: ASYNC110
            await anyio.sleep(0.01)  # asyncssh tells of no window adjust: looked at again

    async def feed(data: bytes) -> None:
        await send(data)
        if not session.closed:
            with contextlib.suppress(OSError, asyncssh.Error):
                state["chan"].write_eof()

    async def close() -> None:
        chan = state.get("chan")
        if chan is not None:
            chan.close()
            with anyio.move_on_after(5):
                await chan.wait_closed()

    return RemoteCalls(start=start, wait=wait, kill=kill, feed=feed, send=send,
                       terminate=terminate, signal=signal_all, close=close)  # fmt: skip


def _split(target: str) -> tuple[str | None, str, int | None]:
    """``[user@]host[:port]`` (``[v6 address]:port`` too) as its parts."""
    user, _, host = target.rpartition("@")
    port = None
    if host.startswith("["):
        address, _, rest = host[1:].partition("]")
        host = address
        if rest.startswith(":") and rest[1:].isdigit():
            port = int(rest[1:])
    elif host.count(":") == 1:
        name, _, number = host.partition(":")
        if number.isdigit():
            host, port = name, int(number)
    return user or None, host, port


def _pattern(name: str, mark: str, below: bool = False) -> str:
    """A regular expression (grep's basic) for the variable ``name`` set to ``mark`` (and,
    ``below``, to marks below it: ``mark.N``...)."""
    escaped = mark.replace(".", "\\.")  # marks are hex digits and dots
    return f"^{name}={escaped}" + ("\\(\\.[0-9]*\\)*$" if below else "$")


def _below_or_at(path: str, directory: str) -> bool:
    return path == directory or path.startswith(directory.rstrip("/") + "/")
