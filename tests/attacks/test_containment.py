"""Containment holes found by attacking the sandbox: kernel interfaces that bypass the filter,
identities shared between runs, writable places without a size, files open to other users,
and links a stage plants for the host to follow."""

from __future__ import annotations

import base64
import os
import stat
import subprocess
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import anyio
import httpx
import pytest

from run_environments import Limits
from run_environments.environments.sandbox import SandboxRunEnvironment
from run_environments.environments.sandbox.identities import DEFAULT_RANGE
from run_environments.server import ServerSettings
from tests.attacks.test_sandbox_attacks import LIBC, run
from tests.helpers import shm_directory
from tests.sandboxing import sandbox_leftovers
from tests.server.conftest import running

pytestmark = pytest.mark.anyio

IO_URING_SETUP = 425  # the same number on every architecture


@pytest.fixture(
    params=[(False, False), (True, False), (False, True), (True, True)],
    ids=["no-network-cold", "network-cold", "no-network-warm", "network-warm"],
)
async def either(request: pytest.FixtureRequest, shared_tmp: Path) -> AsyncIterator:
    network, warm = request.param
    async with SandboxRunEnvironment(tmp_dir=str(shared_tmp), network=network, warm=warm) as env:
        if warm:
            assert await env.warm_up() == 1
        yield env
    assert await sandbox_leftovers(env, shared_tmp) == []


# -- multiplexers of refused operations ---------------------------------------------------
async def test_io_uring_is_refused(either: SandboxRunEnvironment) -> None:
    code = (
        LIBC + "params = ctypes.create_string_buffer(120)\n"
        f"r = libc.syscall({IO_URING_SETUP}, 8, params)\n"
        "import errno\nprint('ALLOWED' if r >= 0 else errno.errorcode[ctypes.get_errno()])"
    )
    assert (await run(either, code)).stdout == "EPERM\n"


async def test_vsock_is_refused_with_or_without_network(either: SandboxRunEnvironment) -> None:
    code = (
        "import socket, errno\n"
        "try:\n    socket.socket(socket.AF_VSOCK, socket.SOCK_STREAM)\n    print('ALLOWED')\n"
        "except OSError as e:\n    print(errno.errorcode[e.errno])"
    )
    assert (await run(either, code)).stdout == "EAFNOSUPPORT\n"


C_COMPAT_SYSCALL = r"""
#include <stdio.h>
int main(void) {
    long result;
    /* getpid through the 32-bit ABI: a way around a filter written for 64-bit numbers */
    __asm__ volatile ("int $0x80" : "=a"(result) : "a"(20) : "memory");
    printf("ALLOWED %ld\n", result);
    return 0;
}
"""


@pytest.mark.skipif(os.uname().machine != "x86_64", reason="the 32-bit ABI is x86's")
async def test_the_32_bit_abi_is_killed(sandbox: SandboxRunEnvironment) -> None:
    result = await run(sandbox, C_COMPAT_SYSCALL, language="c")
    assert "ALLOWED" not in result.stdout
    assert result.signal == "SIGSYS"


# -- identities ---------------------------------------------------------------------------
def host_uids(marker: str) -> dict[str, int]:
    """The host uid of each live process whose command line has an argument starting
    with ``marker``, by that argument."""
    found = {}
    for entry in Path("/proc").iterdir():
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
            status = (entry / "status").read_text()
        except OSError:
            continue
        for arg in argv:
            if arg.startswith(marker.encode()):
                uid = next(line for line in status.splitlines() if line.startswith("Uid:"))
                found[arg.decode()] = int(uid.split()[1])
    return found


async def test_each_run_has_a_host_identity_of_its_own(sandbox: SandboxRunEnvironment) -> None:
    started: set[int] = set()
    all_started = anyio.Event()
    marker = f"runenv-identity-{os.getpid()}-"

    async def one(i: int) -> None:
        def seen(text: str) -> None:
            started.add(i)
            if len(started) == 4:
                all_started.set()

        code = "import time\nprint('up', flush=True)\ntime.sleep(60)"
        await run(sandbox, code, args=[f"{marker}{i}"], on_stdout=seen, timeout=60)

    uids: dict[str, int] = {}
    async with anyio.create_task_group() as tg:
        for i in range(4):
            tg.start_soon(one, i)
        await all_started.wait()
        uids = host_uids(marker)
        tg.cancel_scope.cancel()
    assert len(uids) == 4, uids
    assert len(set(uids.values())) == 4, uids
    assert all(uid in DEFAULT_RANGE for uid in uids.values()), uids


async def test_per_user_kernel_quotas_are_not_shared(sandbox: SandboxRunEnvironment) -> None:
    limit = int(Path("/proc/sys/fs/inotify/max_user_instances").read_text())
    hog = (
        LIBC + "import time\n"
        f"fds = [libc.inotify_init() for _ in range({limit})]\n"
        "print(sum(fd >= 0 for fd in fds), flush=True)\n"
        "time.sleep(60)"  # hold them while the probe runs
    )
    probe = LIBC + "print('ok' if libc.inotify_init() >= 0 else 'refused')"
    held = anyio.Event()
    hogged: list[str] = []

    async def hold() -> None:
        def seen(text: str) -> None:
            hogged.append(text)
            held.set()

        await run(sandbox, hog, on_stdout=seen, timeout=60)

    async with anyio.create_task_group() as tg:
        tg.start_soon(hold)
        await held.wait()
        probed = (await run(sandbox, probe)).stdout
        tg.cancel_scope.cancel()
    assert hogged[0].strip() == str(limit)  # the hog holds every instance its user may have
    assert probed == "ok\n"


# -- writable places have sizes in every mode ---------------------------------------------
WRITE_ALL = """
import errno, os
for place in ("/workspace", "/tmp", "/dev/shm"):
    written = 0
    try:
        for i in range(64):  # 64 files of 1 MiB, under the file size limit
            with open(f"{place}/fill{i}", "wb") as fh:
                fh.write(b"x" * (1 << 20))
            written += 1
    except OSError as e:
        print(place, errno.errorcode[e.errno], written)
    else:
        print(place, "ALLOWED", written)
"""


@pytest.mark.parametrize("cgroups", [True, False], ids=["cgroups", "no-cgroups"])
async def test_every_writable_place_is_bounded(shared_tmp: Path, cgroups: bool) -> None:
    limits = Limits(disk=16 << 20, memory=512 << 20)
    async with SandboxRunEnvironment(tmp_dir=str(shared_tmp), cgroups=cgroups) as env:
        result = await env.execute(WRITE_ALL, limits=limits, timeout=60)
        lines = result.stdout.splitlines()
        if cgroups:  # the workspace is bounded by the memory cgroup; /tmp and /dev/shm by size
            assert lines[1:] == ["/tmp ENOSPC 16", "/dev/shm ENOSPC 16"], result
        else:
            assert [line.split()[:2] for line in lines] == [
                ["/workspace", "ENOSPC"],
                ["/tmp", "ENOSPC"],
                ["/dev/shm", "ENOSPC"],
            ], result
    assert await sandbox_leftovers(env, shared_tmp) == []


async def test_no_cgroups_workspace_bound_in_a_compiled_language(shared_tmp: Path) -> None:
    code = (
        '#include <stdio.h>\nint main(void){FILE*f=fopen("big","w");long n=0;'
        "char b[65536]={0};while(fwrite(b,1,sizeof b,f)==sizeof b&&fflush(f)==0)n+=sizeof b;"
        'printf("%ld\\n",n>>20);return 0;}'
    )
    async with SandboxRunEnvironment(tmp_dir=str(shared_tmp), cgroups=False) as env:
        result = await env.execute(code, language="c", limits=Limits(disk=64 << 20))
    assert result.success and int(result.stdout) < 64, result


# -- files on the host are the server's and the run's only -------------------------------
async def test_workspaces_are_private(sandbox: SandboxRunEnvironment, shared_tmp: Path) -> None:
    code = "import time\nopen('mine.txt', 'w').write('x')\ntime.sleep(2)"
    seen: list[tuple[str, int, int]] = []

    async def look() -> None:
        while not seen:
            for entry in shared_tmp.glob("runenv-*/ws-*"):
                info = entry.stat()
                seen.append((entry.name, stat.S_IMODE(info.st_mode), info.st_uid))
            await anyio.sleep(0.01)

    async with anyio.create_task_group() as tg:
        tg.start_soon(look)
        await run(sandbox, code)
    assert seen and all(mode & 0o077 == 0 for _, mode, _ in seen), seen


# -- a compile step plants a link for the host to follow ----------------------------------
EVIL = r"""
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
__attribute__((constructor)) static void plant(void) {
    char command[4096] = {0};
    unsetenv("LD_PRELOAD");  /* only the first process of each stage */
    FILE *self = fopen("/proc/self/cmdline", "r");
    size_t n = self ? fread(command, 1, sizeof command - 1, self) : 0;
    if (self) fclose(self);
    for (size_t i = 0; i < n; i++) if (!command[i]) command[i] = ' ';
    FILE *log = fopen("/workspace/loaded-in.txt", "a");
    if (log) { fprintf(log, "%s\n", command); fclose(log); }
    /* replace the run's working directory with a link to a host directory */
    if (system("rm -rf /workspace/a && ln -s " VICTIM " /workspace/a") != 0) return;
}
"""


@pytest.fixture
def victim() -> Iterator[Path]:
    with shm_directory("victim", 0o700) as path:
        yield path


@pytest.fixture
def evil_library(tmp_path: Path, victim: Path) -> bytes:
    source = tmp_path / "evil.c"
    source.write_text(EVIL)
    library = tmp_path / "evil.so"
    subprocess.run(
        ["gcc", "-shared", "-fPIC", f'-DVICTIM="{victim}"', "-o", library, source], check=True
    )
    return library.read_bytes()


def test_a_compile_step_cannot_make_the_server_follow_a_link(
    shared_tmp: Path, victim: Path, evil_library: bytes
) -> None:
    """Through the real server: the client's LD_PRELOAD would run in the compiler and swap
    the run's working directory for a link to a host directory before the host makes it."""
    env = SandboxRunEnvironment(tmp_dir=str(shared_tmp))
    with running(ServerSettings(), {"sandbox": env}) as url:
        response = httpx.post(
            f"{url}/v1/execute",
            json={
                "code": '#include <stdio.h>\nint main(void){puts("ran");return 0;}',
                "language": "c",
                "cwd": "a/b",
                "env": {"LD_PRELOAD": "/workspace/evil.so"},
                "files_base64": {"evil.so": base64.b64encode(evil_library).decode()},
                "fetch_files": ["loaded-in.txt"],
            },
            timeout=120,
        )
    assert response.status_code == 200, response.text
    result = response.json()
    assert result["stdout"] == "ran\n", result
    # the program's environment reached the program only, never the compiler
    loaded = base64.b64decode(result["files"]["loaded-in.txt"]).decode().splitlines()
    assert len(loaded) == 1 and loaded[0].rstrip().endswith("/workspace/main"), loaded
    info = victim.stat()
    assert (info.st_uid, stat.S_IMODE(info.st_mode)) == (0, 0o700)
    assert list(victim.iterdir()) == []
