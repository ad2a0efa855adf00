"""The E2B envd API facing hostile clients and programs: sessions per client, quotas, private
files, bounded processes and buffers, and no blocking of the server."""

from __future__ import annotations

import json
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import anyio
import anyio.lowlevel
import httpx
import pytest
from e2b import AsyncSandbox, CommandExitException, SandboxException
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from run_environments import SandboxRunEnvironment
from run_environments.environments.sandbox.identities import DEFAULT_RANGE
from run_environments.server import ServerSettings
from tests.helpers import shm_directory

from .conftest import running
from .hostile import rss, serve_process

pytestmark = pytest.mark.anyio


@pytest.fixture(scope="module")
def envd(workspaces: Path) -> Iterator[str]:
    settings = ServerSettings(
        max_concurrency=2, max_queue=0, max_timeout=3, session_quota=32 << 20, max_sessions=4
    )
    with running(settings, {"sandbox": SandboxRunEnvironment(tmp_dir=str(workspaces))}) as url:
        yield url


async def sandbox_for(url: str, name: str) -> AsyncSandbox:
    return await AsyncSandbox.connect(sandbox_id=name, debug=True, sandbox_url=url)


@pytest.fixture
async def alice(envd: str) -> AsyncSandbox:
    return await sandbox_for(envd, "alice")


@pytest.fixture
async def bob(envd: str) -> AsyncSandbox:
    return await sandbox_for(envd, "bob")


# -- one session per client ---------------------------------------------------------------
async def test_clients_do_not_see_each_other(alice: AsyncSandbox, bob: AsyncSandbox) -> None:
    handle = await alice.commands.run("sleep 30", background=True, envs={"SECRET": "alice's"})
    try:
        assert handle.pid in [p.pid for p in await alice.commands.list()]
        assert await bob.commands.list() == []
        await alice.files.write("/home/user/mine.txt", "alice's file")
        assert not await bob.files.exists("/home/user/mine.txt")
        result = await bob.commands.run("ls /home/user; echo done")
        assert result.stdout == "done\n"
    finally:
        await alice.commands.kill(handle.pid)


async def test_session_files_are_private_to_its_identity(
    alice: AsyncSandbox, workspaces: Path
) -> None:
    await alice.files.write("/home/user/private.txt", "only alice")
    roots = list(workspaces.glob("runenv-*/e2b-*"))
    assert roots
    for root in roots:
        info = root.stat()
        assert stat.S_IMODE(info.st_mode) & 0o077 == 0 and info.st_uid in DEFAULT_RANGE
    found = [p for root in roots if (p := root / "home" / "private.txt").exists()]
    assert len(found) == 1
    other = subprocess.run(["cat", str(found[0])], user=65534, capture_output=True, check=False)
    assert other.returncode != 0 and b"Permission denied" in other.stderr


async def test_session_storage_has_a_quota(alice: AsyncSandbox) -> None:
    kept = 0
    for i in range(3):  # each command within its own memory limit; together past the quota
        result = await alice.commands.run(
            f"head -c 16M /dev/zero > /home/user/fill{i} && echo kept || echo refused"
        )
        kept += result.stdout == "kept\n"
    assert kept < 3
    usage = await alice.commands.run("du -sm /home/user | cut -f1")
    assert int(usage.stdout) <= 32
    await alice.commands.run("rm -f /home/user/fill*")


# -- commands are executions: slots and a time limit --------------------------------------
async def test_commands_take_slots(alice: AsyncSandbox, bob: AsyncSandbox) -> None:
    first = await alice.commands.run("sleep 30", background=True)
    second = await bob.commands.run("sleep 30", background=True)
    try:
        with pytest.raises(SandboxException, match="too many commands"):
            await alice.commands.run("echo a third")
    finally:
        await alice.commands.kill(first.pid)
        await bob.commands.kill(second.pid)


async def test_commands_end_at_the_servers_longest_timeout(alice: AsyncSandbox) -> None:
    with pytest.raises(CommandExitException) as ended:
        await alice.commands.run("echo started; sleep 60", timeout=30)
    assert ended.value.stdout == "started\n"
    assert ended.value.error == "signal: killed"


# -- crafted fields are precise errors ----------------------------------------------------
async def test_crafted_fields_are_precise_errors(alice: AsyncSandbox) -> None:
    await alice.commands.run("ln -sfn /etc /home/user/etc-link; touch /home/user/plain")
    with pytest.raises(SandboxException, match="symbolic link"):
        await alice.commands.run("pwd", cwd="/home/user/etc-link/sub")
    with pytest.raises(SandboxException, match="invalid variable"):
        await alice.commands.run("true", envs={"A=B": "x"})
    with pytest.raises(SandboxException, match="invalid variable"):
        await alice.commands.run("true", envs={"A": "x\0y"})
    with pytest.raises(SandboxException, match="not a directory"):
        await alice.files.make_dir("/home/user/plain/sub")
    with pytest.raises(SandboxException, match="not a directory"):
        await alice.files.write("/home/user/plain/sub/file", "x")


# -- nothing a program makes blocks the server --------------------------------------------
async def test_a_fifo_does_not_freeze_uploads(envd: str, alice: AsyncSandbox) -> None:
    await alice.commands.run("mkfifo /home/user/pipe")
    with anyio.fail_after(20):
        with pytest.raises(SandboxException, match="not a regular file"):
            await alice.files.write("/home/user/pipe", "data")
        with pytest.raises(SandboxException, match="not a regular file"):
            await alice.files.read("/home/user/pipe")
    async with httpx.AsyncClient(timeout=5) as http:
        assert (await http.get(f"{envd}/healthz")).status_code == 200


@pytest.fixture(scope="module")
def roomy(workspaces: Path) -> Iterator[str]:
    """A server whose sessions have the default quota (room for many files)."""
    settings = ServerSettings(max_timeout=120)
    with running(settings, {"sandbox": SandboxRunEnvironment(tmp_dir=str(workspaces))}) as url:
        yield url


async def test_removing_a_huge_tree_leaves_the_server_responsive(roomy: str) -> None:
    envd, alice = roomy, await sandbox_for(roomy, "wide")
    make = (
        "import os\nos.mkdir('wide')\nfor i in range(150000):\n    open(f'wide/{i}', 'w').close()"
    )
    await alice.files.write("/home/user/make.py", make)
    await alice.commands.run("python3 make.py", timeout=60)
    answered_during: list[bool] = []
    removed = anyio.Event()

    async def remove() -> None:
        await alice.files.remove("/home/user/wide")
        removed.set()

    async with anyio.create_task_group() as tg:
        tg.start_soon(remove)
        async with httpx.AsyncClient(timeout=10) as http:
            while not removed.is_set():
                response = await http.get(f"{envd}/healthz")
                answered_during.append(response.status_code == 200 and not removed.is_set())
                await anyio.sleep(0.05)
    assert any(answered_during)  # served while the removal was under way
    assert not await alice.files.exists("/home/user/wide")


async def test_a_deep_tree_is_removed(roomy: str) -> None:
    alice = await sandbox_for(roomy, "deep")
    deep = (
        "import os\nos.mkdir('deep')\nos.chdir('deep')\n"
        "for _ in range(1500):\n    os.mkdir('d')\n    os.chdir('d')"
    )
    await alice.files.write("/home/user/deep.py", deep)
    assert (await alice.commands.run("python3 deep.py")).exit_code == 0
    await alice.files.remove("/home/user/deep")
    assert not await alice.files.exists("/home/user/deep")


# -- memory -------------------------------------------------------------------------------
@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[str, int]]:
    with shm_directory("memory", 0o755) as place, serve_process(place, max_timeout=120) as server:
        yield server


async def test_command_output_is_not_kept(served: tuple[str, int]) -> None:
    url, pid = served
    sbx = await AsyncSandbox.create(debug=True, sandbox_url=url)
    await sbx.commands.run("true")
    before = rss(pid)
    received = 0

    def count(text: str) -> None:
        nonlocal received
        received += len(text)

    await sbx.commands.run("yes | head -c 268435456", on_stdout=count, timeout=120)
    assert received == 256 << 20
    assert rss(pid) - before < 64 << 20, "the server kept the command's output"


async def test_slow_downloads_are_streamed(served: tuple[str, int]) -> None:
    url, pid = served
    sbx = await AsyncSandbox.create(debug=True, sandbox_url=url)
    await sbx.commands.run("truncate -s 256M /home/user/sparse")
    before = rss(pid)
    from .hostile import send_only

    readers = [
        send_only(url, "GET", "/files?path=/home/user/sparse", E2b_Sandbox_Id="debug_sandbox_id")
        for _ in range(4)
    ]
    try:
        await anyio.sleep(2)  # what the server would buffer for readers that do not read
        assert rss(pid) - before < 64 << 20
    finally:
        for sock in readers:
            sock.close()


# -- no input makes a server error --------------------------------------------------------
PATHS = st.one_of(
    st.text(st.characters(codec=None, categories=["Cs", "L", "N", "P", "Zs", "Cc"]), max_size=12),
    st.sampled_from(["/home/user/../../etc/passwd", "/home/user/etc-link/x", "/tmp/\0", "", "/"]),
).map(lambda tail: tail if tail.startswith("/") else f"/home/user/{tail}")
CONNECT = {"content-type": "application/json", "e2b-sandbox-id": "fuzz"}


@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@given(path=PATHS, other=PATHS, operation=st.sampled_from(["Stat", "ListDir", "MakeDir",
                                                           "Remove", "Move", "files"]))  # fmt: skip
def test_no_path_makes_a_server_error(envd: str, path: str, other: str, operation: str) -> None:
    with httpx.Client(base_url=envd, timeout=30) as http:
        if operation == "files":  # the path as raw bytes, as a hostile client may send it
            query = "path=" + quote(path.encode("utf-8", "surrogatepass"), safe="")
            upload = http.post(f"/files?{query}", content=b"x", headers={"e2b-sandbox-id": "fuzz"})
            download = http.get(f"/files?{query}", headers={"e2b-sandbox-id": "fuzz"})
            statuses = [upload.status_code, download.status_code]
        else:
            body = {"source": path, "destination": other} if operation == "Move" else {"path": path}
            response = http.post(
                f"/filesystem.Filesystem/{operation}", content=json.dumps(body), headers=CONNECT
            )
            statuses = [response.status_code]
            assert '"code":"unknown"' not in response.text.replace(" ", ""), response.text
    assert all(status < 500 for status in statuses), (operation, path, statuses)


async def test_a_follower_that_left_never_makes_the_command_spin() -> None:
    from run_environments.server.envd_process import FOLLOWER_BUFFER, Event, Follower

    follower = Follower()
    await follower.push(Event("stdout", b"x" * (FOLLOWER_BUFFER + 1)))  # the client is behind
    pushed = anyio.Event()

    async def push_more() -> None:
        await follower.push(Event("stdout", b"more"))  # waits for room
        pushed.set()

    async with anyio.create_task_group() as tg:
        tg.start_soon(push_more)
        await anyio.lowlevel.checkpoint()
        assert not pushed.is_set()  # waiting, not spinning past the bound
        follower.close()  # the client leaves
        with anyio.fail_after(5):
            await pushed.wait()
    with anyio.fail_after(5):  # a push after the client left returns at once
        await follower.push(Event("stdout", b"x" * (FOLLOWER_BUFFER + 1)))
    assert follower.closed


async def test_many_tiny_events_are_bounded_and_none_is_lost() -> None:
    from run_environments.server.envd_process import EVENT_COST, FOLLOWER_BUFFER, Event, Follower

    follower = Follower()
    count = FOLLOWER_BUFFER // EVENT_COST + 10
    received: list[bytes] = []

    async def read() -> None:
        async for event in follower.events():
            received.append(event.data)

    async with anyio.create_task_group() as tg:
        for _ in range(FOLLOWER_BUFFER // EVENT_COST):
            await follower.push(Event("stdout", b"."))  # within the bound: no waiting
        assert follower.buffered > FOLLOWER_BUFFER - EVENT_COST
        tg.start_soon(read)
        for _ in range(10):
            await follower.push(Event("stdout", b"."))  # waits for the reader, loses nothing
        await follower.push(Event("end"))
    follower.close()
    assert len(received) == count + 1
