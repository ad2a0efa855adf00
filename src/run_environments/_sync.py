"""The synchronous facade: every call goes through one long-lived event-loop thread."""

from __future__ import annotations

import atexit
import os
import threading
import weakref
from types import TracebackType
from typing import Any

import anyio
from anyio.from_thread import BlockingPortal

from ._models import ExecutionOptions, ExecutionResult
from ._registry import create_environment
from .environments.base import EnvironmentStatus, RunEnvironment

_lock = threading.Lock()
_portal: BlockingPortal | None = None
_portal_pid = 0
_open: weakref.WeakSet[SyncRunEnvironment] = weakref.WeakSet()


def _serve(ready: threading.Event, holder: list[BlockingPortal]) -> None:
    async def main() -> None:
        async with BlockingPortal() as portal:
            holder.append(portal)
            ready.set()
            await portal.sleep_until_stopped()

    anyio.run(main)


def portal() -> BlockingPortal:
    """The process's one event-loop thread, started on first use (again after a fork)."""
    global _portal, _portal_pid
    with _lock:
        if _portal is None or _portal_pid != os.getpid():
            ready, holder = threading.Event(), list[BlockingPortal]()
            thread = threading.Thread(
                target=_serve, args=(ready, holder), name="run-environments", daemon=True
            )
            thread.start()
            ready.wait()
            _portal, _portal_pid = holder[0], os.getpid()
        return _portal


@atexit.register
def _shutdown() -> None:
    if _portal is None or _portal_pid != os.getpid():
        return
    for env in list(_open):
        env.cleanup()
    _portal.call(_portal.stop)


class SyncRunEnvironment:
    """A run environment for synchronous code.

    :param environment: an environment object, or a registered environment name (the
        sandbox by default, as everywhere: code runs isolated unless you ask otherwise).
    :param kwargs: constructor arguments when ``environment`` is a name.
    """

    def __init__(self, environment: RunEnvironment | str = "sandbox", **kwargs: Any) -> None:
        if isinstance(environment, str):
            environment = create_environment(environment, **kwargs)
        self.environment = environment
        _open.add(self)

    @property
    def name(self) -> str:
        """The wrapped environment's name."""
        return self.environment.name

    def execute(
        self, code: str, options: ExecutionOptions | None = None, **overrides: Any
    ) -> ExecutionResult:
        """Run ``code``; see :meth:`RunEnvironment.execute`."""
        return portal().call(lambda: self.environment.execute(code, options, **overrides))

    def cleanup(self) -> None:
        """Stop everything still running; see :meth:`RunEnvironment.cleanup`."""
        portal().call(self.environment.cleanup)
        _open.discard(self)

    def is_ready(self) -> bool:
        """Whether the environment can run code now."""
        return portal().call(self.environment.is_ready)

    def status(self) -> EnvironmentStatus:
        """Readiness with its reason, and the languages the environment can run."""
        return portal().call(self.environment.status)

    def __enter__(self) -> SyncRunEnvironment:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.cleanup()
