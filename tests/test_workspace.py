"""Host-side operations on workspaces a program has touched: links, FIFOs, depth, width."""

from __future__ import annotations

import os
import stat
import sys
import threading
from pathlib import Path

import pytest

from run_environments import InvalidOptionsError
from run_environments._workspace import (
    MAX_OPEN_DEPTH,
    make_dirs,
    read_files,
    remove_tree,
    write_files,
)


@pytest.fixture
def victim(tmp_path: Path) -> Path:
    """A host directory owned by root that no workspace operation may touch."""
    path = tmp_path / "victim"
    path.mkdir(mode=0o700)
    (path / "secret").write_text("host data")
    return path


def untouched(victim: Path) -> bool:
    info = victim.stat()
    return (
        info.st_uid == os.getuid()
        and stat.S_IMODE(info.st_mode) == 0o700
        and sorted(p.name for p in victim.iterdir()) == ["secret"]
    )


def test_make_dirs_refuses_a_planted_link(tmp_path: Path, victim: Path) -> None:
    root = tmp_path / "ws"
    (root / "a").mkdir(parents=True)
    (root / "a" / "b").symlink_to(victim)
    with pytest.raises(InvalidOptionsError, match="symbolic link"):
        make_dirs(str(root), "a/b/c", owner=(65534, 65534))
    assert untouched(victim)


def test_make_dirs_gives_new_directories_to_the_owner(tmp_path: Path) -> None:
    make_dirs(str(tmp_path), "x/y", owner=(65534, 65533))
    assert (tmp_path / "x").stat().st_uid == 65534
    assert (tmp_path / "x" / "y").stat().st_gid == 65533


def test_make_dirs_through_a_file_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "f").write_text("")
    with pytest.raises(InvalidOptionsError, match="not a directory"):
        make_dirs(str(tmp_path), "f/sub")


def test_write_files_never_follows_a_link(tmp_path: Path, victim: Path) -> None:
    root = tmp_path / "ws"
    root.mkdir()
    (root / "d").symlink_to(victim)
    (root / "f").symlink_to(victim / "secret")
    with pytest.raises(InvalidOptionsError, match="symbolic link"):
        write_files(str(root), {"d/new": b"x"})
    with pytest.raises(InvalidOptionsError, match="symbolic link"):
        write_files(str(root), {"f": b"overwritten"})
    assert untouched(victim) and (victim / "secret").read_text() == "host data"


def test_write_files_to_a_fifo_does_not_block(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "pipe")
    outcome: list[BaseException | None] = []

    def write() -> None:
        try:
            write_files(str(tmp_path), {"pipe": b"x"})
            outcome.append(None)
        except BaseException as exc:
            outcome.append(exc)

    thread = threading.Thread(target=write, daemon=True)
    thread.start()
    thread.join(timeout=10)
    assert not thread.is_alive(), "writing to a FIFO blocked"
    assert isinstance(outcome[0], InvalidOptionsError)
    assert "not a regular file" in str(outcome[0])


def test_files_where_one_is_a_directory_of_another_are_refused(tmp_path: Path) -> None:
    with pytest.raises(InvalidOptionsError, match="'a/b' would be inside 'a'"):
        write_files(str(tmp_path), {"a": b"1", "a/b": b"2"})


def test_read_files_leaves_out_links_fifos_and_what_passes_the_total(
    tmp_path: Path, victim: Path
) -> None:
    (tmp_path / "link").symlink_to(victim / "secret")
    (tmp_path / "d").symlink_to(victim)
    os.mkfifo(tmp_path / "fifo")
    big = tmp_path / "sparse"
    with open(big, "wb") as fh:
        fh.truncate(4 << 20)  # 4 MiB of nothing on disk
    for i in range(8):
        os.link(big, tmp_path / f"hard{i}")
    paths = ["link", "d/secret", "fifo", "missing", *(f"hard{i}" for i in range(8))]
    fetched = read_files(str(tmp_path), paths, limit=4 << 20, total=10 << 20)
    assert sorted(fetched.files) == ["hard0", "hard1"]  # 2 x 4 MiB within 10 MiB
    assert fetched.files["hard0"] is fetched.files["hard1"]  # one inode read once
    assert set(fetched.missing) == set(paths) - {"hard0", "hard1"}


def test_remove_tree_deeper_than_recursion_and_descriptors_allow(tmp_path: Path) -> None:
    root = tmp_path / "deep"
    root.mkdir()
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    depth = max(sys.getrecursionlimit(), 1500) + 100
    try:
        for i in range(depth):  # by descriptors: the path would pass PATH_MAX
            os.mkdir("d", dir_fd=fd)
            if i % 100 == 0:
                os.close(os.open("f", os.O_CREAT | os.O_WRONLY, dir_fd=fd))
            child = os.open("d", os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
            os.close(fd)
            fd = child
    finally:
        os.close(fd)
    before = len(os.listdir("/proc/self/fd"))
    remove_tree(str(root))
    assert not root.exists()
    assert len(os.listdir("/proc/self/fd")) == before
    assert depth > MAX_OPEN_DEPTH


def test_remove_tree_with_permissions_taken_away(tmp_path: Path) -> None:
    root = tmp_path / "ro"
    (root / "a" / "b").mkdir(parents=True)
    (root / "a" / "b" / "f").write_text("x")
    (root / "a" / "b").chmod(0)
    (root / "a").chmod(0o500)
    remove_tree(str(root))
    assert not root.exists()


def test_remove_tree_does_not_follow_links(tmp_path: Path, victim: Path) -> None:
    root = tmp_path / "ws"
    root.mkdir()
    (root / "to_victim").symlink_to(victim)
    (root / "sub").mkdir()
    (root / "sub" / "to_secret").symlink_to(victim / "secret")
    remove_tree(str(root))
    assert not root.exists() and untouched(victim)
