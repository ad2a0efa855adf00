"""How requests come in: whole, in time, within a memory budget, and only while wanted.

:class:`Intake` reads each request body itself before the application sees it: it refuses
a body over the size limit (413), one that does not arrive within the body deadline (408),
and one that would take the bytes held by all requests in progress past the server's budget
(503). While the application works, it watches the connection: a client that goes away
before its response is complete cancels the work (a run stops and frees its slot).

:func:`guarded_protocol` closes connections that do not finish their request headers in
time and refuses connections past a maximum, so half-sent requests cannot hold the
server's descriptors.
"""

from __future__ import annotations

import asyncio
from typing import Any

import anyio
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .errors import ErrorFormats, Problem


class Intake:
    """See the module docstring."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        limit: int,
        budget: int,
        deadline: float,
        formats: ErrorFormats,
    ) -> None:
        self.app = app
        self.limit = limit
        self.budget = budget
        self.deadline = deadline
        self.formats = formats
        self.held = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        held = 0
        try:
            length = dict(scope["headers"]).get(b"content-length", b"")
            if length.isdigit() and int(length) > self.limit:
                too_large = f"the request body is larger than {self.limit} bytes"
                await self._refuse(scope, send, 413, too_large)
                return
            held = self._reserve(int(length) if length.isdigit() else 0)
            if held < 0:
                busy = "the server holds too many request bodies; retry later"
                await self._refuse(scope, send, 503, busy)
                return
            body, held, problem = await self._read(receive, held)
            if problem is not None:
                if problem[0]:
                    await self._refuse(scope, send, *problem)
                return
            await self._serve(scope, receive, send, body)
        finally:
            self.held -= max(held, 0)

    def _reserve(self, size: int, already: int = 0) -> int:
        """Hold ``size`` bytes of the budget (``already`` held); -1 if it has no room."""
        if self.held - already + size > self.budget:
            return -1
        self.held += size - already
        return size

    async def _read(self, receive: Receive, held: int) -> tuple[bytes, int, tuple[int, str] | None]:
        """The whole body, the bytes held for it, and (status, message) if refused (status 0:
        the client left)."""
        chunks: list[bytes] = []
        received = 0
        with anyio.move_on_after(self.deadline):
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    return b"", held, (0, "")
                chunk = message.get("body", b"")
                received += len(chunk)
                if received > self.limit:
                    return b"", held, (413, f"the request body is larger than {self.limit} bytes")
                if received > held:
                    grown = self._reserve(min(max(received, held * 2), self.limit), held)
                    if grown < 0:
                        return b"", held, (503, "the server holds too many request bodies")
                    held = grown
                chunks.append(chunk)
                if not message.get("more_body", False):
                    return b"".join(chunks), held, None
        return b"", held, (408, f"the request body did not arrive within {self.deadline:g} s")

    async def _serve(self, scope: Scope, receive: Receive, send: Send, body: bytes) -> None:
        """Run the application on ``body``; cancel it if the client leaves before the end."""
        left = anyio.Event()
        state = {"replayed": False, "complete": False}

        async def replay() -> Message:
            if not state["replayed"]:
                state["replayed"] = True
                return {"type": "http.request", "body": body, "more_body": False}
            await left.wait()
            return {"type": "http.disconnect"}

        async def sending(message: Message) -> None:
            if message["type"] == "http.response.body" and not message.get("more_body", False):
                state["complete"] = True
            await send(message)

        async with anyio.create_task_group() as tg:

            async def watch() -> None:
                while (await receive())["type"] != "http.disconnect":
                    pass
                left.set()
                if not state["complete"]:
                    tg.cancel_scope.cancel()

            tg.start_soon(watch)
            await self.app(scope, replay, sending)
            tg.cancel_scope.cancel()

    async def _refuse(self, scope: Scope, send: Send, status: int, message: str) -> None:
        headers = {"Connection": "close"}
        if status == 503:
            headers["Retry-After"] = "1"
        problem = Problem(status, message, {"type": "RequestRefused"}, headers=headers)
        response = self.formats.respond(scope.get("path", ""), problem)

        async def nothing() -> Message:
            return {"type": "http.disconnect"}

        await response(scope, nothing, send)


def guarded_protocol(base: type[Any], *, header_timeout: float, max_connections: int) -> type[Any]:
    """``base`` (one of uvicorn's HTTP protocols) closing a connection whose request headers
    are not complete within ``header_timeout`` seconds, and any past ``max_connections``."""

    class Guarded(base):  # type: ignore[misc]
        _header_timer: asyncio.TimerHandle | None = None
        _header_cycle: Any = None

        def connection_made(self, transport: Any) -> None:
            super().connection_made(transport)
            if len(self.connections) > max_connections:
                transport.close()
                return
            self._arm()

        def data_received(self, data: bytes) -> None:
            if self._header_timer is None and (self.cycle is None or self.cycle.response_complete):
                self._arm()
            super().data_received(data)

        def connection_lost(self, exc: Exception | None) -> None:
            if self._header_timer is not None:
                self._header_timer.cancel()
                self._header_timer = None
            super().connection_lost(exc)

        def _arm(self) -> None:
            self._header_cycle = self.cycle
            self._header_timer = self.loop.call_later(header_timeout, self._expire)

        def _expire(self) -> None:
            self._header_timer = None
            if self.transport.get_protocol() is not self:
                return  # upgraded: the connection is a WebSocket's now, with its own pings
            if self.cycle is self._header_cycle and not self.transport.is_closing():
                self.transport.close()  # no new request started in time: a half-sent one

    Guarded.__name__ = f"Guarded{base.__name__}"
    return Guarded
