"""Blocking file work, kept off the event loop: a worker thread, or the loop itself for the
few operations a small workspace needs (within a budget)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import anyio

T = TypeVar("T")


async def off_loop(function: Callable[..., T], *args: Any) -> T:
    """Run a blocking file operation in a worker thread, to its end even when cancelled."""
    with anyio.CancelScope(shield=True):
        result = await anyio.to_thread.run_sync(function, *args)
    return result


INLINE_OPERATIONS = 64
"""File operations (on a memory file system: microseconds each) done on the event loop
before the rest of the work goes to a worker thread."""


class OverBudget(Exception):
    """An operation met more entries than it may handle on the event loop."""


class Budget:
    """A count of file operations an inline call may still make."""

    def __init__(self, operations: int) -> None:
        self.left = operations

    def spend(self) -> None:
        self.left -= 1
        if self.left < 0:
            raise OverBudget


async def soon(function: Callable[..., T], *args: Any) -> T:
    """``function(*args, budget=...)`` on the event loop if it needs few operations (a small
    workspace, the usual case), else (again, from the start) in a worker thread. Functions
    taking a budget may be repeated: what they did before running out is not done twice."""
    try:
        return function(*args, budget=Budget(INLINE_OPERATIONS))
    except OverBudget:
        return await off_loop(function, *args)
