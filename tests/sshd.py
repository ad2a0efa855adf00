"""OpenSSH servers for the tests: Debian's ``sshd`` on 127.0.0.1, each with its own host key
and configuration, serving a user of the test session's own (made here with a key, removed
at the end) so that what a run leaves on the "remote" is exactly that user's processes and
files. Servers are stopped by their PID; users of test sessions that died are removed by
the next one."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import asyncssh

GECOS = "run-environments test"
SSHD = "/usr/sbin/sshd"
PF_EXITING = 0x4
"""The kernel's flag (in /proc/PID/stat) of a process that is exiting."""


def _owner(pid: int) -> str | None:
    """``<pid>:<start time>`` of a live process (not a zombie), or None."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return None if fields[0] in ("Z", "X") else f"{pid}:{fields[19]}"


def processes_of(uid: int) -> list[str]:
    """The processes of ``uid``: ``pid command line`` each."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if entry.stat().st_uid != uid:
                continue
            line = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode().strip()
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[0] in ("Z", "X") or int(fields[6]) & PF_EXITING:
            continue  # dead, or on its way out (its parent has not reaped it yet)
        found.append(f"{entry.name} {fields[0]} ppid {fields[1]} {line}")
    return found


def _kill_all_of(uid: int) -> None:
    for _ in range(20):
        left = processes_of(uid)
        if not left:
            return
        for each in left:
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(each.split()[0]), signal.SIGKILL)
        time.sleep(0.05)


def _remove_user(name: str) -> None:
    """Remove the user, its processes, and what runs of it left in /tmp (the next user may
    get the same id)."""
    with contextlib.suppress(KeyError):
        uid = pwd.getpwnam(name).pw_uid
        _kill_all_of(uid)
        for entry in Path("/tmp").glob("runenv-*"):
            with contextlib.suppress(OSError):
                if entry.lstat().st_uid == uid:
                    shutil.rmtree(entry) if entry.is_dir() else entry.unlink()
    subprocess.run(["userdel", "-r", "-f", name], capture_output=True, check=False)


def sweep_users() -> None:
    """Remove the test users of test sessions whose process is gone."""
    for entry in pwd.getpwall():
        if not entry.pw_gecos.startswith(GECOS + " "):
            continue
        owner = entry.pw_gecos.removeprefix(GECOS + " ").replace("/", ":")  # ":" ends a field
        pid = owner.partition(":")[0]
        if pid.isdigit() and _owner(int(pid)) == owner:
            continue
        _remove_user(entry.pw_name)


@dataclasses.dataclass
class User:
    """A user the tests log in as."""

    name: str
    uid: int
    home: Path
    key: Path  # its private key (this machine's side)
    password: str

    def processes(self) -> list[str]:
        return processes_of(self.uid)


@contextlib.contextmanager
def session_user(directory: Path) -> Iterator[User]:
    """A user of this session's own, with a key (in ``directory``) and a password."""
    sweep_users()
    name = f"rt{secrets.token_hex(6)}"
    owner = str(_owner(os.getpid())).replace(":", "/")  # ":" would end the passwd field
    subprocess.run(
        ["useradd", "--create-home", "--shell", "/bin/sh", "--comment", f"{GECOS} {owner}",
         name], check=True, capture_output=True,
    )  # fmt: skip
    try:
        entry = pwd.getpwnam(name)
        home = Path(entry.pw_dir)
        key = asyncssh.generate_private_key("ssh-ed25519")
        key.write_private_key(str(directory / "id_ed25519"))
        (directory / "id_ed25519").chmod(0o600)
        ssh = home / ".ssh"
        ssh.mkdir(mode=0o700)
        (ssh / "authorized_keys").write_bytes(key.export_public_key())
        for path in (ssh, ssh / "authorized_keys"):
            os.chown(path, entry.pw_uid, entry.pw_gid)
        password = secrets.token_urlsafe(12)
        subprocess.run(["chpasswd"], input=f"{name}:{password}\n", text=True, check=True)
        yield User(name=name, uid=entry.pw_uid, home=home, key=directory / "id_ed25519",
                   password=password)  # fmt: skip
    finally:
        _remove_user(name)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def sweep_servers() -> None:
    """Stop the servers of test sessions whose process is gone (by the PID in their
    directory) and remove their directories."""
    for directory in Path(tempfile.gettempdir()).glob("runenv-sshd-*"):
        try:
            owner = (directory / "owner").read_text()
        except OSError:
            continue
        pid = owner.partition(":")[0]
        if pid.isdigit() and _owner(int(pid)) == owner:
            continue
        with contextlib.suppress(OSError, ValueError):
            server = int((directory / "sshd.pid").read_text())
            if _is_sshd(server):
                os.kill(server, signal.SIGTERM)
        shutil.rmtree(directory, ignore_errors=True)


class Server:
    """An sshd of the tests' own on 127.0.0.1 (``start``/``stop`` by its PID, again and
    again on the same port and host key)."""

    def __init__(self, user: User, directory: Path, *, max_sessions: int = 10) -> None:
        sweep_servers()
        self.user = user
        self.directory = directory
        (directory / "owner").write_text(str(_owner(os.getpid())))
        self.port = free_port()
        self.host_key = directory / "host_key"
        key = asyncssh.generate_private_key("ssh-ed25519")
        key.write_private_key(str(self.host_key))
        self.host_key.chmod(0o600)
        self.public_key = key.export_public_key().decode().strip()
        self.log = directory / "sshd.log"
        self.config = directory / "sshd_config"
        self.config.write_text(
            f"Port {self.port}\nListenAddress 127.0.0.1\nHostKey {self.host_key}\n"
            f"PidFile {directory / 'sshd.pid'}\nAllowUsers {user.name}\n"
            f"MaxSessions {max_sessions}\nUsePAM no\nPasswordAuthentication yes\n"
            "KbdInteractiveAuthentication no\nPermitRootLogin no\nStrictModes no\n"
            "LogLevel DEBUG1\nSubsystem sftp internal-sftp\n"
        )
        self.process: subprocess.Popen[bytes] | None = None

    def known_hosts_line(self) -> str:
        return f"[127.0.0.1]:{self.port} {self.public_key}\n"

    def start(self) -> None:
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # its privilege separation
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                [SSHD, "-D", "-e", "-f", str(self.config)], stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True,
            )  # fmt: skip
        deadline = time.monotonic() + 30
        while True:
            with socket.socket() as probe:
                if probe.connect_ex(("127.0.0.1", self.port)) == 0:
                    return
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"sshd did not start: {self.log.read_text()[-500:]}")
            time.sleep(0.05)

    def stop(self) -> None:
        """Stop the server and the connections it serves: its sshd processes, found by PID
        below it (the programs they started are left to what the client arranged)."""
        process, self.process = self.process, None
        if process is None:
            return
        children = [p for p in _descendants(process.pid) if _is_sshd(p)]
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        for pid in children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)

    def __enter__(self) -> Server:
        self.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()


def _is_sshd(pid: int) -> bool:
    try:
        return os.readlink(f"/proc/{pid}/exe") == SSHD
    except OSError:
        return False


def _descendants(pid: int) -> list[int]:
    """The processes below ``pid`` (read from /proc)."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, IndexError, ValueError):
                parents[int(entry.name)] = int(
                    (entry / "stat").read_text().rsplit(")", 1)[1].split()[1]
                )
    found, frontier = [], [pid]
    while frontier:
        parent = frontier.pop()
        children = [child for child, p in parents.items() if p == parent]
        found += children
        frontier += children
    return found


@contextlib.contextmanager
def workdir() -> Iterator[Path]:
    directory = Path(tempfile.mkdtemp(prefix="runenv-sshd-"))
    directory.chmod(0o755)
    try:
        yield directory
    finally:
        shutil.rmtree(directory, ignore_errors=True)
