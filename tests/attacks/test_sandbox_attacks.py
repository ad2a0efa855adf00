"""Hostile programs against the sandbox: each is contained, and the host is unchanged after.

Every test uses the ``sandbox`` fixture, which also asserts that no sandboxed process,
workspace or cgroup is left once the environment is cleaned up.
"""

from __future__ import annotations

import os
import platform
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from run_environments import ExecutionResult, InvalidOptionsError, Limits, SpawnError
from run_environments.environments.sandbox import SandboxRunEnvironment
from run_environments.testing import program
from tests.sandboxing import eventually_no_processes

pytestmark = pytest.mark.anyio

SYSCALLS = {  # numbers for calls that libc does not wrap
    "x86_64": {"bpf": 321, "perf_event_open": 298, "keyctl": 250, "init_module": 175},
    "aarch64": {"bpf": 280, "perf_event_open": 241, "keyctl": 219, "init_module": 105},
}.get(platform.machine())

LIBC = "import ctypes, os\nlibc = ctypes.CDLL(None, use_errno=True)\n"


def refused(call: str) -> str:
    """Python that runs ``call`` (a libc call) and prints its errno name, or 'ALLOWED'."""
    return (
        LIBC + f"r = {call}\n"
        "import errno\n"
        "print('ALLOWED' if r >= 0 else errno.errorcode[ctypes.get_errno()])"
    )


def attempt(statement: str, setup: str = "") -> str:
    """Python that tries ``statement`` and prints the errno it fails with, or 'ALLOWED'."""
    handler = "except OSError as e:\n    print(e.errno)"
    return f"{setup}try:\n    {statement}\n    print('ALLOWED')\n{handler}"


async def run(sandbox: SandboxRunEnvironment, code: str, **options: object) -> ExecutionResult:
    options.setdefault("timeout", 30)
    return await sandbox.execute(code, **options)  # type: ignore[arg-type]


# -- network ------------------------------------------------------------------------------
@pytest.fixture
def host_tcp() -> Iterator[socket.socket]:
    server = socket.create_server(("127.0.0.1", 0))
    server.settimeout(0.5)
    yield server
    server.close()


async def test_tcp_egress(sandbox: SandboxRunEnvironment, host_tcp: socket.socket) -> None:
    """The host's 127.0.0.1 is another network namespace's: nothing listens there."""
    port = host_tcp.getsockname()[1]
    code = f"import socket\nsocket.create_connection(('127.0.0.1', {port}), timeout=3)"
    result = await run(sandbox, code)
    assert not result.success and "ConnectionRefusedError" in result.stderr
    code = "import socket\nsocket.create_connection(('192.0.2.1', 80), timeout=3)"
    result = await run(sandbox, code)
    assert not result.success and "Network is unreachable" in result.stderr
    with pytest.raises(TimeoutError):
        host_tcp.accept()  # nothing arrived on the host


async def test_udp_egress(sandbox: SandboxRunEnvironment) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as host_udp:
        host_udp.bind(("127.0.0.1", 0))
        host_udp.settimeout(0.5)
        port = host_udp.getsockname()[1]
        code = (
            "import socket\ns = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
            f"s.sendto(b'leak', ('127.0.0.1', {port}))\n"
            "try:\n    s.sendto(b'leak', ('192.0.2.1', 53))\nexcept OSError as e:\n"
            "    print(e.strerror)"
        )
        result = await run(sandbox, code)
        assert result.stdout == "Network is unreachable\n", result
        with pytest.raises(TimeoutError):
            host_udp.recv(10)  # its 127.0.0.1 was the run's own


async def test_dns(sandbox: SandboxRunEnvironment) -> None:
    code = "import socket\nsocket.getaddrinfo('example.com', 80)"
    result = await run(sandbox, code)
    assert not result.success and "gaierror" in result.stderr
    listing = await run(sandbox, "import os; print(os.path.exists('/etc/resolv.conf'))")
    assert listing.stdout == "False\n"


async def test_raw_and_packet_sockets(sandbox: SandboxRunEnvironment) -> None:
    code = (
        "import socket\n"
        "for family, kind in [(socket.AF_INET, socket.SOCK_RAW), (socket.AF_INET6,"
        " socket.SOCK_RAW | socket.SOCK_CLOEXEC), (socket.AF_INET, 10),"
        " (socket.AF_PACKET, socket.SOCK_RAW), (socket.AF_NETLINK, socket.SOCK_RAW),"
        " (socket.AF_VSOCK, socket.SOCK_STREAM), (50, socket.SOCK_STREAM)]:\n"
        "    try:\n        socket.socket(family, kind)\n        print('ALLOWED')\n"
        "    except OSError as e:\n        print(e.errno)"
    )
    result = await run(sandbox, code)
    assert result.stdout.split() == ["1", "1", "1", "97", "97", "97", "97"]  # EPERM, EAFNOSUPPORT


async def test_a_run_serves_and_calls_itself_on_loopback(sandbox: SandboxRunEnvironment) -> None:
    """As tests of web code do: a server on 127.0.0.1 (and ::1) in the run, its client too."""
    code = (
        "import socket, threading\n"
        "for family, host in [(socket.AF_INET, '127.0.0.1'), (socket.AF_INET6, '::1')]:\n"
        "    server = socket.create_server((host, 0), family=family)\n"
        "    port = server.getsockname()[1]\n"
        "    def answer():\n"
        "        conn, _ = server.accept()\n"
        "        conn.sendall(conn.recv(100).upper())\n"
        "        conn.close()\n"
        "    threading.Thread(target=answer).start()\n"
        "    with socket.create_connection((host, port), timeout=5) as c:\n"
        "        c.sendall(b'ping ' + host.encode())\n"
        "        print(c.recv(100).decode())"
    )
    result = await run(sandbox, code)
    assert result.stdout == "PING 127.0.0.1\nPING ::1\n", result


async def test_only_loopback_exists(sandbox: SandboxRunEnvironment) -> None:
    result = await run(sandbox, "print(open('/proc/net/dev').read())")
    interfaces = [line.split(":")[0].strip() for line in result.stdout.splitlines()[2:] if line]
    assert interfaces == ["lo"]


async def test_unix_sockets_still_work(sandbox: SandboxRunEnvironment) -> None:
    code = "import socket\na, b = socket.socketpair()\na.send(b'ok')\nprint(b.recv(2).decode())"
    assert (await run(sandbox, code)).stdout == "ok\n"


# -- host secrets -------------------------------------------------------------------------
@pytest.mark.parametrize("path", ["/root", "/home", "/etc/shadow", "/etc/gshadow", "/sys"])
async def test_host_paths_do_not_exist(sandbox: SandboxRunEnvironment, path: str) -> None:
    result = await run(sandbox, f"import os\nprint(os.path.exists({path!r}))")
    assert result.stdout == "False\n"


async def test_project_files_are_not_visible(sandbox: SandboxRunEnvironment) -> None:
    here = str(Path(__file__).resolve())
    result = await run(sandbox, f"import os\nprint(os.path.exists({here!r}), os.listdir('/'))")
    visible = eval(result.stdout.split(" ", 1)[1])
    assert result.stdout.startswith("False ")
    assert set(visible) <= {"bin", "dev", "etc", "lib", "lib32", "lib64", "libx32", "proc",
                            "sbin", "tmp", "usr", "var", "workspace"}  # fmt: skip
    assert {"bin", "dev", "etc", "lib", "proc", "tmp", "usr", "workspace"} <= set(visible)
    if "var" in visible:  # only GHC's package database, read-only
        code = "import os\nprint(os.listdir('/var'), os.listdir('/var/lib'))"
        assert (await run(sandbox, code)).stdout == "['lib'] ['ghc']\n"


async def test_host_environment_does_not_leak(sandbox: SandboxRunEnvironment) -> None:
    os.environ["RUNENV_API_KEY"] = "sk-host-secret"
    try:
        code = (
            "import os, glob\nfound = [p for p in glob.glob('/proc/*/environ')"
            " if b'sk-host-secret' in open(p, 'rb').read()]\n"
            "print('sk-host-secret' in str(os.environ), found)"
        )
        result = await run(sandbox, code)
    finally:
        del os.environ["RUNENV_API_KEY"]
    assert result.stdout == "False []\n"


async def test_host_processes_are_invisible(sandbox: SandboxRunEnvironment) -> None:
    code = (
        "import os\npids = sorted(int(p) for p in os.listdir('/proc') if p.isdigit())\n"
        f"print(pids, os.path.exists('/proc/{os.getpid()}/environ'))"
    )
    result = await run(sandbox, code)
    pids, host_visible = result.stdout.rsplit(" ", 1)
    assert len(eval(pids)) <= 3  # init, the program (and prlimit's exec is the program)
    assert host_visible.strip() == "False"


# -- the file system ----------------------------------------------------------------------
@pytest.mark.parametrize("target", ["/usr/bin/evil", "/etc/evil", "/evil", "/proc/evil"])
async def test_cannot_write_outside(sandbox: SandboxRunEnvironment, target: str) -> None:
    code = attempt(f"open({target!r}, 'w')")
    result = await run(sandbox, code)
    assert result.stdout.strip() in ("13", "30", "2")  # EACCES, EROFS, ENOENT
    assert not Path(target).exists()


async def test_filling_the_disk(sandbox: SandboxRunEnvironment) -> None:
    before = os.statvfs("/dev/shm").f_bavail
    code = (
        "n = 0\ntry:\n    while True:\n"
        "        open(f'/tmp/f{n}', 'wb').write(b'x' * (1 << 20)); n += 1\n"
        "except OSError as e:\n    print(e.errno, n)"
    )
    result = await run(sandbox, code, limits=Limits(disk=16 << 20))
    errno_, count = result.stdout.split()
    assert errno_ == "28" and int(count) <= 16  # ENOSPC
    assert os.statvfs("/dev/shm").f_bavail >= before - 1024  # the host's space is back


async def test_symlinks_made_inside_do_not_reach_the_host(
    sandbox: SandboxRunEnvironment, shared_tmp: Path
) -> None:
    victim = shared_tmp / "victim.txt"
    victim.write_text("host data")
    code = (
        f"import os\nos.symlink({str(victim)!r}, 'link')\nos.symlink('/etc', 'etc-link')\n"
        "try:\n    open('link', 'w').write('overwritten')\n"
        "except OSError as e:\n    print(e.errno)\n"
        "print(os.listdir('etc-link')[:1] != [])"
    )
    result = await run(sandbox, code)
    assert result.stdout.splitlines()[0] == "2"  # ENOENT: the host path is not there
    assert victim.read_text() == "host data"  # removing the workspace followed no link
    victim.unlink()


@pytest.mark.parametrize("path", ["../escape", "/etc/passwd", "a/../../escape", "a/../.."])
async def test_files_option_cannot_escape(sandbox: SandboxRunEnvironment, path: str) -> None:
    with pytest.raises(InvalidOptionsError):
        await sandbox.execute("pass", files={path: "x"})


@pytest.mark.parametrize("device", ["/dev/mem", "/dev/kmem", "/dev/kvm", "/dev/sda", "/dev/vda"])
async def test_devices(sandbox: SandboxRunEnvironment, device: str) -> None:
    code = attempt(f"open({device!r}, 'rb')")
    result = await run(sandbox, code)
    assert result.stdout.strip() in ("2", "13", "1")


# -- processes ----------------------------------------------------------------------------
async def test_fork_bomb(sandbox: SandboxRunEnvironment) -> None:
    code = "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass"
    result = await run(sandbox, code, timeout=3, limits=Limits(processes=64))
    assert result.timed_out and not result.success
    assert await eventually_no_processes(sandbox) == []


async def test_memory_bomb(sandbox: SandboxRunEnvironment) -> None:
    code = "x = []\nwhile True:\n    x.append(bytearray(64 << 20))"
    result = await run(sandbox, code, limits=Limits(memory=128 << 20))
    assert result.oom_killed and result.signal == "SIGKILL"


async def test_cpu_spin_past_the_cpu_limit(sandbox: SandboxRunEnvironment) -> None:
    result = await run(sandbox, "while True: pass", limits=Limits(cpu_time=1))
    assert not result.timed_out and result.signal == "SIGXCPU"
    assert result.error == "exceeded its CPU time limit (SIGXCPU)"


async def test_output_flood(sandbox: SandboxRunEnvironment) -> None:
    result = await run(sandbox, program("floods.py"), max_output_bytes=1 << 16)
    assert result.stdout_truncated and len(result.stdout) == 1 << 16


async def test_double_forked_daemon_dies_with_the_run(sandbox: SandboxRunEnvironment) -> None:
    result = await run(sandbox, program("daemon.py"))
    assert "parent done" in result.stdout
    assert await eventually_no_processes(sandbox) == []


async def test_daemon_that_leaves_the_session_dies_on_timeout(
    sandbox: SandboxRunEnvironment,
) -> None:
    code = program("daemon.py").replace('print("parent done"', 'time.sleep(60)\nprint("late"')
    result = await run(sandbox, code, timeout=1)
    assert result.timed_out
    assert await eventually_no_processes(sandbox) == []


async def test_ignoring_sigterm(sandbox: SandboxRunEnvironment) -> None:
    result = await sandbox.execute(program("ignores_sigterm.py"), timeout=1)
    assert result.timed_out and result.signal == "SIGKILL"
    assert result.stdout.startswith("ready ")


async def test_kill_minus_one_spares_the_host(sandbox: SandboxRunEnvironment) -> None:
    with subprocess.Popen(["sleep", "60"]) as sentinel:
        code = "import os, signal\nos.kill(-1, signal.SIGKILL)"
        await run(sandbox, code)
        assert sentinel.poll() is None
        sentinel.kill()


async def test_signals_to_host_processes(sandbox: SandboxRunEnvironment) -> None:
    with subprocess.Popen(["sleep", "60"]) as sentinel:
        code = attempt(f"os.kill({sentinel.pid}, 9)", setup="import os\n")
        result = await run(sandbox, code)
        assert result.stdout == "3\n"  # ESRCH: not in this PID namespace
        assert sentinel.poll() is None
        sentinel.kill()


# -- privileges ---------------------------------------------------------------------------
async def test_no_privileges(sandbox: SandboxRunEnvironment) -> None:
    code = (
        "import os\nstatus = dict(l.split(':\\t') for l in open('/proc/self/status').read()"
        ".splitlines() if ':\\t' in l)\n"
        "print(os.getuid(), status['CapEff'], status['CapBnd'], status['NoNewPrivs'],"
        " status['Seccomp'])"
    )
    result = await run(sandbox, code)
    assert result.stdout.split() == ["65534", "0" * 16, "0" * 16, "1", "2"]


async def test_setuid(sandbox: SandboxRunEnvironment) -> None:
    code = attempt("os.setuid(0)", setup="import os\n")
    assert (await run(sandbox, code)).stdout in ("1\n", "22\n")  # EPERM, or EINVAL: no uid 0


async def test_ptrace(sandbox: SandboxRunEnvironment) -> None:
    result = await run(sandbox, refused("libc.ptrace(0, 0, None, None)"))  # PTRACE_TRACEME
    assert result.stdout == "EPERM\n"


async def test_mount(sandbox: SandboxRunEnvironment) -> None:
    result = await run(sandbox, refused("libc.mount(b'none', b'/tmp', b'tmpfs', 0, None)"))
    assert result.stdout == "EPERM\n"


async def test_new_namespaces(sandbox: SandboxRunEnvironment) -> None:
    result = await run(sandbox, refused("libc.unshare(0x10000000)"))  # CLONE_NEWUSER
    assert result.stdout == "EPERM\n"
    shell = await run(sandbox, "unshare -r true; echo $?", language="bash")
    assert shell.stdout.strip() != "0"


async def test_clock(sandbox: SandboxRunEnvironment) -> None:
    code = refused("libc.clock_settime(0, ctypes.byref((ctypes.c_long * 2)(0, 0)))")
    assert (await run(sandbox, code)).stdout == "EPERM\n"


@pytest.mark.parametrize("call", ["bpf", "perf_event_open", "keyctl", "init_module"])
async def test_kernel_interfaces(sandbox: SandboxRunEnvironment, call: str) -> None:
    if SYSCALLS is None:
        pytest.skip(
            f"system call numbers are listed for x86_64 and aarch64, not {platform.machine()}"
        )
    code = refused(f"libc.syscall({SYSCALLS[call]}, 0, 0, 0, 0, 0)")
    assert (await run(sandbox, code)).stdout == "EPERM\n"


# -- size of the request ------------------------------------------------------------------
async def test_huge_argv(sandbox: SandboxRunEnvironment) -> None:
    with pytest.raises(SpawnError, match="Argument list too long"):
        await sandbox.execute("pass", args=["x" * 200_000] * 20)


async def test_huge_environment(sandbox: SandboxRunEnvironment) -> None:
    with pytest.raises(SpawnError, match="Argument list too long"):
        await sandbox.execute("pass", env={f"V{i}": "y" * 100_000 for i in range(40)})


async def test_the_host_is_unharmed(sandbox: SandboxRunEnvironment) -> None:
    """After the attacks above (run in this same process), the host still works."""
    assert os.path.exists("/etc/shadow") and os.path.exists("/root")
    done = subprocess.run([sys.executable, "-c", "print('fine')"], capture_output=True, text=True)
    assert done.stdout == "fine\n"
    assert signal.getsignal(signal.SIGTERM) is not None
