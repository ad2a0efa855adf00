"""The official e2b SDK, unchanged, against runenv serve's envd API."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from e2b import AsyncSandbox, CommandExitException

pytestmark = pytest.mark.anyio


@pytest.fixture
async def sbx(url: str) -> AsyncIterator[AsyncSandbox]:
    sandbox = await AsyncSandbox.create(debug=True, sandbox_url=url)
    yield sandbox
    await sandbox.kill()


async def test_commands_run(sbx: AsyncSandbox) -> None:
    result = await sbx.commands.run("echo hello; echo oops >&2; whoami; pwd")
    assert result.stdout == "hello\nsandbox\n/home/user\n"
    assert result.stderr == "oops\n"
    assert result.exit_code == 0


async def test_callbacks_env_and_cwd(sbx: AsyncSandbox) -> None:
    out: list[str] = []
    err: list[str] = []
    result = await sbx.commands.run(
        'echo "$GREETING from $(pwd)"; echo warn >&2',
        envs={"GREETING": "hi"},
        cwd="/tmp",
        on_stdout=out.append,
        on_stderr=err.append,
    )
    assert "".join(out) == result.stdout == "hi from /tmp\n"
    assert "".join(err) == "warn\n"


async def test_nonzero_exit_raises_the_sdks_exception(sbx: AsyncSandbox) -> None:
    with pytest.raises(CommandExitException) as caught:
        await sbx.commands.run("echo partial; exit 3")
    assert caught.value.exit_code == 3 and caught.value.stdout == "partial\n"


async def test_stdin(sbx: AsyncSandbox) -> None:
    handle = await sbx.commands.run("read line; echo got:$line", background=True, stdin=True)
    await sbx.commands.send_stdin(handle.pid, "typed\n")
    result = await handle.wait()
    assert result.stdout == "got:typed\n"


async def test_background_list_connect_and_kill(sbx: AsyncSandbox) -> None:
    handle = await sbx.commands.run("echo started; sleep 60", background=True)
    listed = await sbx.commands.list()
    assert handle.pid in [p.pid for p in listed]
    seen: list[str] = []
    attached = await sbx.commands.connect(handle.pid, on_stdout=seen.append)
    assert await sbx.commands.kill(handle.pid)
    with pytest.raises(CommandExitException):
        await attached.wait()
    assert handle.pid not in [p.pid for p in await sbx.commands.list()]


async def test_files(sbx: AsyncSandbox) -> None:
    info = await sbx.files.write("/home/user/data/notes.txt", "first line\n")
    assert info.path == "/home/user/data/notes.txt"
    assert await sbx.files.read("/home/user/data/notes.txt") == "first line\n"
    await sbx.files.write("raw.bin", b"\x00\xff")  # relative paths are in the home
    assert await sbx.files.read("/home/user/raw.bin", format="bytes") == b"\x00\xff"
    result = await sbx.commands.run("cat data/notes.txt; wc -c < raw.bin")
    assert result.stdout == "first line\n2\n"  # commands see the files, and vice versa
    await sbx.commands.run("echo made > made.txt")
    assert await sbx.files.read("made.txt") == "made\n"
    names = {e.name for e in await sbx.files.list("/home/user")}
    assert {"data", "raw.bin", "made.txt"} <= names
    assert await sbx.files.exists("/home/user/raw.bin")
    assert await sbx.files.make_dir("/home/user/new/deeper")
    await sbx.files.rename("/home/user/made.txt", "/home/user/new/moved.txt")
    assert await sbx.files.read("/home/user/new/moved.txt") == "made\n"
    await sbx.files.remove("/home/user/new")
    assert not await sbx.files.exists("/home/user/new")


async def test_host_paths_stay_out_of_reach(sbx: AsyncSandbox) -> None:
    await sbx.commands.run("ln -s /etc/shadow /home/user/leak")
    with pytest.raises(Exception, match="symbolic link"):
        await sbx.files.read("/home/user/leak")
    with pytest.raises(Exception, match="reachable"):
        await sbx.files.read("/etc/hostname")


def test_sync_sandbox(url: str) -> None:
    from e2b import Sandbox

    with Sandbox.create(debug=True, sandbox_url=url) as sandbox:
        sandbox.files.write("hello.py", "print('from the sync SDK')")
        assert sandbox.commands.run("python3 hello.py").stdout == "from the sync SDK\n"
