"""Small helpers shared by the tests."""

from __future__ import annotations

from pathlib import Path

import anyio


def process_state(pid: int) -> str:
    """The state letter of ``pid`` ("Z" for a zombie), or "gone"."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return "gone"


def is_running(pid: int) -> bool:
    """Whether ``pid`` is a live process (a zombie is dead, just not yet reaped)."""
    return process_state(pid) not in ("gone", "Z", "X")


async def wait_until_gone(pid: int, within: float = 10) -> bool:
    """Wait (at most ``within`` seconds) for ``pid`` to die; whether it did."""
    with anyio.move_on_after(within):
        while is_running(pid):
            await anyio.sleep(0.02)
    return not is_running(pid)
