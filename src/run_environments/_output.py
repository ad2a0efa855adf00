"""What is kept of a program's output: bytes up to a bound, with the stop-at-limit rule, and
the text of it handed to a callback as it arrives. Every supervisor uses it, so output means
the same in every environment."""

from __future__ import annotations

import codecs
import inspect
from dataclasses import dataclass, field

from ._models import OutputCallback, RawOutput, deliver


@dataclass(kw_only=True)
class OutputBuffer:
    """One stream's output: at most ``limit`` bytes are kept; past them the stream is
    ``truncated`` and the program must be stopped (the caller does that)."""

    limit: int
    callback: OutputCallback | None
    data: bytearray = field(default_factory=bytearray)
    truncated: bool = False
    decoder: codecs.IncrementalDecoder = field(
        default_factory=lambda: codecs.getincrementaldecoder("utf-8")("replace")
    )

    def keep(self, chunk: bytes) -> bytes:
        """Keep what fits of ``chunk`` and return it; past the bound, set ``truncated``."""
        room = self.limit - len(self.data)
        if len(chunk) > room:
            chunk = chunk[: max(room, 0)]
            self.truncated = True
        self.data += chunk
        return chunk

    async def emit(self, chunk: bytes, final: bool = False) -> None:
        """Give the callback the text of ``chunk`` (multi-byte characters split between
        chunks are decoded whole); with ``final``, what is left."""
        if self.callback is None:
            return
        if isinstance(self.callback, RawOutput):
            if chunk:
                returned = self.callback.write(chunk)
                if inspect.isawaitable(returned):
                    await returned
            return
        text = self.decoder.decode(chunk, final)
        if text:
            await deliver(self.callback, text)
