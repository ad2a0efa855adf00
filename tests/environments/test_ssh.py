"""The SSH environment, against Debian's OpenSSH server started by the tests on 127.0.0.1
(its own host key, a user of the session's own with a key), unsandboxed and in bubblewrap
on the "remote", with a second server reached through the first as a jump host."""

from __future__ import annotations

import os
import pathlib
import re
import subprocess
import sys
import textwrap
import time
from collections.abc import AsyncIterator, Callable

import anyio
import pytest

from run_environments import (
    AuthenticationError,
    EnvironmentUnavailableError,
    HostKeyError,
    InvalidOptionsError,
    Limits,
    RunEnvironment,
    UnreachableError,
)
from run_environments.environments.ssh import SSHRunEnvironment
from run_environments.testing import EnvironmentBehaviour, program
from tests.sshd import Server, User, workdir

pytestmark = pytest.mark.anyio

DAEMON = """\
import os, sys, time
if os.fork() == 0:
    os.setsid()
    if os.fork() == 0:
        print("daemon", os.getpid(), flush=True)
        time.sleep(300)
    os._exit(0)
os.wait()
time.sleep(300)
"""


def remote_leftovers(user: User) -> list[str]:
    """The user's processes other than the sshd ones serving its connections, and the
    directories of runs under /tmp."""
    left = [p for p in user.processes() if " sshd: " not in p]
    for entry in pathlib.Path("/tmp").glob("runenv-*"):
        try:
            if entry.lstat().st_uid == user.uid:
                left.append(f"directory {entry}")
        except FileNotFoundError:
            continue
    return left


async def eventually_clean(user: User, within: float = 10) -> list[str]:
    """``remote_leftovers``, once empty or after ``within`` seconds (the remote's processes
    of a connection that ended go on their own time)."""
    deadline = time.monotonic() + within
    while (left := remote_leftovers(user)) and time.monotonic() < deadline:
        await anyio.sleep(0.1)
    return left


def connections(server: Server) -> int:
    """Logins the server accepted so far."""
    return server.log.read_text().count("Accepted publickey for")


class SSHBehaviour(EnvironmentBehaviour):
    sandbox = False

    @pytest.fixture
    async def env(
        self, sshd: Server, ssh_user: User, known_hosts: str
    ) -> AsyncIterator[SSHRunEnvironment]:
        self.user = ssh_user
        env = SSHRunEnvironment(
            f"{ssh_user.name}@127.0.0.1:{sshd.port}", key_file=str(ssh_user.key),
            known_hosts=known_hosts, sandbox=self.sandbox,
        )  # fmt: skip
        try:
            yield env
        finally:
            await env.cleanup()
        assert await eventually_clean(ssh_user) == []

    async def leftovers(self, env: RunEnvironment) -> list[str]:
        return remote_leftovers(self.user)


class TestSSH(SSHBehaviour):
    sandbox = False


class TestSSHSandboxed(SSHBehaviour):
    sandbox = True


@pytest.fixture
def make(sshd: Server, ssh_user: User, known_hosts: str) -> Callable[..., SSHRunEnvironment]:
    def make(**options: object) -> SSHRunEnvironment:
        host = options.pop("host", f"{ssh_user.name}@127.0.0.1:{sshd.port}")
        given = {"key_file": str(ssh_user.key), "known_hosts": known_hosts, **options}
        return SSHRunEnvironment(str(host), **given)  # type: ignore[arg-type]

    return make


@pytest.fixture
async def unsandboxed(make: Callable[..., SSHRunEnvironment]) -> AsyncIterator[SSHRunEnvironment]:
    async with make(sandbox=False) as env:
        yield env


@pytest.fixture
async def sandboxed(make: Callable[..., SSHRunEnvironment]) -> AsyncIterator[SSHRunEnvironment]:
    async with make(sandbox=True) as env:
        yield env


def test_importing_the_environment_warns_of_nothing() -> None:
    # asyncssh names cryptography's deprecated DSA types at import; a user running with
    # warnings as errors (or reading stderr) must not meet that
    subprocess.run(
        [sys.executable, "-W", "error", "-c", "import run_environments.environments.ssh"],
        check=True,
        capture_output=True,
        timeout=60,
    )


# -- connecting ---------------------------------------------------------------------------
async def test_a_changed_host_key_is_refused(
    make: Callable[..., SSHRunEnvironment], sshd: Server, tmp_path: pathlib.Path
) -> None:
    import asyncssh

    forged = asyncssh.generate_private_key("ssh-ed25519").export_public_key().decode().strip()
    known = tmp_path / "known_hosts"
    known.write_text(f"[127.0.0.1]:{sshd.port} {forged}\n")
    env = make(known_hosts=str(known))
    with pytest.raises(HostKeyError, match="does not match the one in"):
        await env.execute("print(1)")
    status = await env.status()
    assert not status.ready
    assert "does not match" in (status.reason or "")
    assert not await env.is_ready()


async def test_an_unknown_host_key_is_refused_unless_checking_is_turned_off(
    make: Callable[..., SSHRunEnvironment], tmp_path: pathlib.Path
) -> None:
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    with pytest.raises(HostKeyError, match="is not known"):
        await make(known_hosts=str(empty)).execute("print(1)")
    async with make(known_hosts=str(empty), verify_host_key=False) as env:
        assert (await env.execute("print(1)")).stdout == "1\n"


async def test_a_key_the_server_does_not_accept(
    make: Callable[..., SSHRunEnvironment], tmp_path: pathlib.Path
) -> None:
    import asyncssh

    asyncssh.generate_private_key("ssh-ed25519").write_private_key(str(tmp_path / "key"))
    with pytest.raises(AuthenticationError, match="refused the login"):
        await make(key_file=str(tmp_path / "key")).execute("print(1)")


async def test_a_password_login(
    make: Callable[..., SSHRunEnvironment], ssh_user: User, tmp_path: pathlib.Path
) -> None:
    import asyncssh

    asyncssh.generate_private_key("ssh-ed25519").write_private_key(str(tmp_path / "key"))
    async with make(key_file=str(tmp_path / "key"), password=ssh_user.password) as env:
        assert (await env.execute("import getpass; print(getpass.getuser())")).stdout == (
            ssh_user.name + "\n"
        )
    with pytest.raises(AuthenticationError):
        await make(key_file=str(tmp_path / "key"), password="wrong").execute("print(1)")


async def test_nothing_listens_or_the_name_does_not_resolve(
    make: Callable[..., SSHRunEnvironment], ssh_user: User
) -> None:
    from tests.sshd import free_port

    port = free_port()
    refused = make(host=f"{ssh_user.name}@127.0.0.1:{port}")
    with pytest.raises(UnreachableError, match="refused the connection: is sshd running"):
        await refused.execute("print(1)")
    unknown = make(host="no-such-host.invalid")
    status = await unknown.status()
    assert not status.ready
    assert "cannot resolve 'no-such-host.invalid'" in (status.reason or "")
    nowhere = SSHRunEnvironment()
    assert "no host to connect to" in ((await nowhere.status()).reason or "")


async def test_a_host_alias_of_the_ssh_configuration(
    sshd: Server, ssh_user: User, known_hosts: str, tmp_path: pathlib.Path
) -> None:
    config = tmp_path / "config"
    config.write_text(
        f"Host remote-box\n  HostName 127.0.0.1\n  Port {sshd.port}\n  User {ssh_user.name}\n"
        f"  IdentityFile {ssh_user.key}\n"
    )
    async with SSHRunEnvironment("remote-box", config=str(config), known_hosts=known_hosts) as env:
        result = await env.execute("import getpass; print(getpass.getuser())")
    assert result.stdout == ssh_user.name + "\n"


async def test_a_jump_host(
    sshd: Server, jump_sshd: Server, ssh_user: User, known_hosts: str, tmp_path: pathlib.Path
) -> None:
    """The second server is reached through the first: the first forwards to it (its log
    says so), and without the first the way is shut while the second still answers."""
    through = f"{ssh_user.name}@127.0.0.1:{sshd.port}"
    target = f"{ssh_user.name}@127.0.0.1:{jump_sshd.port}"
    async with SSHRunEnvironment(target, jump=through, key_file=str(ssh_user.key),
                                 known_hosts=known_hosts) as env:  # fmt: skip
        result = await env.execute("print('through')")
    assert result.stdout == "through\n"
    log = sshd.log.read_text()
    forwarded = re.findall(r"server_request_direct_tcpip: .*target 127\.0\.0\.1 port (\d+)", log)
    assert str(jump_sshd.port) in forwarded
    # the same, written as the configuration's ProxyJump
    config = tmp_path / "config"
    config.write_text(
        f"Host inner\n  HostName 127.0.0.1\n  Port {jump_sshd.port}\n  User {ssh_user.name}\n"
        f"  IdentityFile {ssh_user.key}\n  ProxyJump {through}\n"
    )
    sshd.stop()
    try:
        env = SSHRunEnvironment("inner", config=str(config), key_file=str(ssh_user.key),
                                known_hosts=known_hosts)  # fmt: skip
        with pytest.raises(UnreachableError):
            await env.execute("print(1)")
        async with SSHRunEnvironment(target, key_file=str(ssh_user.key),
                                     known_hosts=known_hosts) as direct:  # fmt: skip
            assert (await direct.execute("print('direct')")).stdout == "direct\n"
    finally:
        sshd.start()
    async with SSHRunEnvironment("inner", config=str(config), key_file=str(ssh_user.key),
                                 known_hosts=known_hosts) as env:  # fmt: skip
        assert (await env.execute("print('configured')")).stdout == "configured\n"


async def test_fifty_runs_share_one_connection(
    unsandboxed: SSHRunEnvironment, sshd: Server
) -> None:
    before = connections(sshd)
    results: list[str] = []

    async def one(i: int) -> None:
        result = await unsandboxed.execute(f"import time; time.sleep(0.2); print({i})")
        results.append(result.stdout)

    async with anyio.create_task_group() as tg:
        for i in range(50):
            tg.start_soon(one, i)
    assert sorted(results) == sorted(f"{i}\n" for i in range(50))
    assert connections(sshd) == before + 1


async def test_more_sessions_than_the_server_allows_is_a_precise_error(
    ssh_user: User, known_hosts: str
) -> None:
    with workdir() as directory, Server(ssh_user, directory, max_sessions=2) as small:
        known = directory / "known_hosts"
        known.write_text(pathlib.Path(known_hosts).read_text() + small.known_hosts_line())
        env = SSHRunEnvironment(f"{ssh_user.name}@127.0.0.1:{small.port}",
                                key_file=str(ssh_user.key), known_hosts=str(known))  # fmt: skip
        errors: list[str] = []

        async def refused() -> None:
            try:
                await env.execute("import time; time.sleep(1)")
            except EnvironmentUnavailableError as exc:
                errors.append(str(exc))

        try:
            async with anyio.create_task_group() as tg:
                for _ in range(4):
                    tg.start_soon(refused)
        finally:
            await env.cleanup()
        assert errors  # one SFTP session and one run fit; the others are refused
        assert all("refused a channel" in e and "MaxSessions" in e for e in errors)
        async with SSHRunEnvironment(f"{ssh_user.name}@127.0.0.1:{small.port}",
                                     key_file=str(ssh_user.key), known_hosts=str(known),
                                     sessions=2) as fitting:  # fmt: skip
            results = []

            async def one() -> None:
                results.append((await fitting.execute("print(1)")).stdout)

            async with anyio.create_task_group() as tg:
                for _ in range(4):
                    tg.start_soon(one)
            assert results == ["1\n"] * 4
    assert await eventually_clean(ssh_user) == []


# -- killing on the remote ----------------------------------------------------------------
@pytest.mark.parametrize("sandbox", [False, True])
async def test_a_double_forked_daemon_dies_with_its_run(
    make: Callable[..., SSHRunEnvironment], ssh_user: User, sandbox: bool
) -> None:
    async with make(sandbox=sandbox) as env:
        result = await env.execute(DAEMON, timeout=2)
        assert result.timed_out
        assert result.stdout.startswith("daemon ")
        assert remote_leftovers(ssh_user) == []  # at once: before the result came back
        finished = await env.execute(program("daemon.py"))
        assert finished.success and finished.stdout.startswith("daemon ")
        assert remote_leftovers(ssh_user) == []


async def test_cleanup_kills_runs_under_way(
    make: Callable[..., SSHRunEnvironment], ssh_user: User
) -> None:
    env = make(sandbox=False)
    started = anyio.Event()

    async def run() -> None:
        await env.execute(DAEMON, on_stdout=lambda _: started.set(), timeout=60)

    async with anyio.create_task_group() as tg:
        tg.start_soon(run)
        await started.wait()
        assert remote_leftovers(ssh_user) != []
        await env.cleanup()
        tg.cancel_scope.cancel()
    assert await eventually_clean(ssh_user, within=2) == []


async def test_a_server_restart_mid_run_is_a_precise_error_then_a_new_connection(
    unsandboxed: SSHRunEnvironment, sshd: Server, ssh_user: User
) -> None:
    started = anyio.Event()
    async with anyio.create_task_group() as tg:
        tg.start_soon(sshd_restart_when, started, sshd)
        with pytest.raises(UnreachableError, match="dropped during the run"):
            await unsandboxed.execute(DAEMON, on_stdout=lambda _: started.set(), timeout=60)
    # the watchdog the run left on the remote killed it when its connection ended
    assert await eventually_clean(ssh_user) == []
    assert (await unsandboxed.execute("print('again')")).stdout == "again\n"


async def sshd_restart_when(event: anyio.Event, server: Server) -> None:
    await event.wait()
    await anyio.to_thread.run_sync(server.stop)
    await anyio.to_thread.run_sync(server.start)


async def test_a_client_killed_mid_run_leaves_nothing_on_the_remote(
    sshd: Server, ssh_user: User, known_hosts: str
) -> None:
    script = textwrap.dedent(f"""
        import anyio, sys
        from run_environments.environments.ssh import SSHRunEnvironment
        async def main():
            env = SSHRunEnvironment({f"{ssh_user.name}@127.0.0.1:{sshd.port}"!r},
                                    key_file={str(ssh_user.key)!r}, known_hosts={known_hosts!r})
            await env.execute({DAEMON!r}, on_stdout=lambda d: print("started", flush=True),
                              timeout=120)
        anyio.run(main)
    """)
    client = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE)
    try:
        assert client.stdout is not None
        assert client.stdout.readline() == b"started\n"
        assert remote_leftovers(ssh_user) != []
    finally:
        client.kill()
        client.wait()
        client.stdout.close()  # type: ignore[union-attr]
    assert await eventually_clean(ssh_user) == []


# -- the sandbox on the remote ------------------------------------------------------------
async def test_a_sandboxed_program_sees_no_home_no_network_and_no_other_run(
    sandboxed: SSHRunEnvironment, sshd: Server, ssh_user: User
) -> None:
    code = textwrap.dedent(f"""
        import os, socket
        print(os.path.exists({str(ssh_user.home)!r}))
        try:
            socket.create_connection(("127.0.0.1", {sshd.port}), timeout=2)
            print("connected")
        except OSError as e:
            print("no network")
        print(sorted(os.listdir("/tmp")), [p for p in os.listdir("/proc") if p.isdigit()])
    """)
    result = await sandboxed.execute(code)
    assert result.stdout.splitlines()[:2] == ["False", "no network"]
    listing = result.stdout.splitlines()[2]
    assert listing.startswith("['runenv-") and listing.count("runenv-") == 1
    assert listing.endswith("['1', '2']")  # bubblewrap's init and the program
    assert "bubblewrap" in " ".join((await sandboxed.status()).notes)


async def test_fetching_a_link_the_program_planted_brings_back_nothing(
    sandboxed: SSHRunEnvironment, unsandboxed: SSHRunEnvironment, ssh_user: User
) -> None:
    secret = ssh_user.home / ".ssh" / "authorized_keys"
    code = (
        f"import os; os.symlink({str(secret)!r}, 'out'); os.mkdir('d');"
        f" os.symlink({str(secret.parent)!r}, 'd/s'); os.mkfifo('fifo')"
    )
    for env in (sandboxed, unsandboxed):
        result = await env.execute(code, fetch_files=["out", "d/s/authorized_keys", "fifo"])
        assert result.success
        assert result.files == {}
        assert set(result.missing_files) == {"out", "d/s/authorized_keys", "fifo"}


async def test_a_run_s_limits_hold_on_the_remote(sandboxed: SSHRunEnvironment) -> None:
    result = await sandboxed.execute("while True: pass", limits=Limits(cpu_time=1), timeout=20)
    assert result.signal == "SIGXCPU"
    assert result.error == "exceeded its CPU time limit (SIGXCPU)"
    files = await sandboxed.execute(
        "import os\ntry:\n  [os.open('/dev/null', 0) for _ in range(100)]\n"
        "except OSError as e: print(e.errno)", limits=Limits(open_files=20),
    )  # fmt: skip
    assert files.stdout == "24\n"  # EMFILE
    big = await sandboxed.execute(
        "try:\n  open('f', 'wb').write(b'x' * (8 << 20))\nexcept OSError as e: print(e.errno)",
        limits=Limits(disk=1 << 20),
    )  # Python ignores SIGXFSZ, and its write fails
    assert big.stdout == "27\n"  # EFBIG


async def test_a_variable_name_the_shell_cannot_take_is_a_clear_error(
    unsandboxed: SSHRunEnvironment,
) -> None:
    with pytest.raises(InvalidOptionsError, match="over SSH a name must be"):
        await unsandboxed.execute("print(1)", env={"A.B": "1"})
    result = await unsandboxed.execute(
        "import os; print(os.environ['V'])", env={"V": 'it\'s $HOME `x` "q"\n2'}
    )
    assert result.stdout == 'it\'s $HOME `x` "q"\n2\n'


async def test_files_are_binary_safe_both_ways(unsandboxed: SSHRunEnvironment) -> None:
    blob = bytes(range(256)) * 1000
    result = await unsandboxed.execute(
        "open('out.bin', 'wb').write(open('in/blob.bin', 'rb').read()[::-1])",
        files={"in/blob.bin": blob}, fetch_files=["out.bin"],
    )  # fmt: skip
    assert result.files == {"out.bin": blob[::-1]}


async def test_a_login_script_that_prints_does_not_confuse_the_probe(
    make: Callable[..., SSHRunEnvironment], ssh_user: User
) -> None:
    """bash, as a login shell, reads ~/.bashrc for a command that sshd runs: what it prints
    (a banner, a greeting) comes before the probe's answer and is skipped."""
    bashrc = ssh_user.home / ".bashrc"
    bashrc.write_text("echo 'Welcome to the remote'\necho '/usr/bin/fake'\n")
    subprocess.run(["usermod", "--shell", "/bin/bash", ssh_user.name], check=True)
    try:
        async with make(sandbox=False) as env:
            status = await env.status()
            available = {lang.name for lang in status.languages if lang.available}
            assert status.ready and {"python", "c", "bash"} <= available, status
            assert (await env.execute("print('ok')")).stdout == "ok\n"
    finally:
        subprocess.run(["usermod", "--shell", "/bin/sh", ssh_user.name], check=True)
        bashrc.unlink()


async def test_a_key_from_the_agent(
    sshd: Server, ssh_user: User, known_hosts: str, tmp_path: pathlib.Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    """No key file given: the key comes from OpenSSH's ssh-agent (started here, stopped by
    its PID), as ``ssh`` finds it through $SSH_AUTH_SOCK."""
    socket_path = tmp_path / "agent.sock"
    agent = subprocess.Popen(["ssh-agent", "-D", "-a", str(socket_path)],
                             stdout=subprocess.DEVNULL)  # fmt: skip
    try:
        deadline = time.monotonic() + 10
        while not socket_path.exists() and time.monotonic() < deadline:
            await anyio.sleep(0.05)
        env = {**os.environ, "SSH_AUTH_SOCK": str(socket_path)}
        subprocess.run(["ssh-add", str(ssh_user.key)], env=env, check=True, capture_output=True)
        monkeypatch.setenv("SSH_AUTH_SOCK", str(socket_path))
        monkeypatch.setenv("HOME", str(tmp_path))  # no key of this user's own is tried
        target = f"{ssh_user.name}@127.0.0.1:{sshd.port}"
        async with SSHRunEnvironment(target, known_hosts=known_hosts) as env_:
            assert (await env_.execute("print('agent')")).stdout == "agent\n"
    finally:
        agent.terminate()
        agent.wait()


async def test_runs_in_a_root_of_one_s_choice(
    make: Callable[..., SSHRunEnvironment], ssh_user: User
) -> None:
    root = ssh_user.home / "runs"
    root.mkdir()
    os.chown(root, ssh_user.uid, ssh_user.uid)
    try:
        async with make(root=str(root), sandbox=True) as env:
            result = await env.execute("import os; print(os.getcwd())")
            assert result.stdout.startswith(f"{root}/runenv-")
        assert list(root.iterdir()) == []
    finally:
        root.rmdir()
