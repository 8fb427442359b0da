"""uvicorn's httptools protocol with one send(2) per response instead of two.

Why: uvicorn writes a response's status line and headers (`http.response.start`)
and its body (`http.response.body`) with two `transport.write` calls, and
uvloop sends each at once: two syscalls and two TCP segments per decision, the
first of which (measured with py-spy on `troupe serve` under the benchmark's
load) was the single most expensive line of the request path. Here the
transport is wrapped so that the writes made during one step of the event loop
are joined and sent together right after it (`loop.call_soon`), as
TCP_CORK would; a decide answer's two writes become one. Nothing waits for
it: the flush runs before the loop polls for I/O again, and `close()` flushes
first, so bytes go out in the order written, and a connection closed by its
peer meanwhile drops them as the transport itself would.

`troupe serve` runs uvicorn with `http="serving.http_protocol:CoalescingHttpToolsProtocol"`.
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

PROTOCOL = "serving.http_protocol:CoalescingHttpToolsProtocol"
"""uvicorn's `http=` value for this protocol (an import string: it travels to worker processes as is)."""


class CoalescingTransport:
    """A transport whose writes during one event-loop step go out as one `write` on the next one."""

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._pending: list[bytes] = []

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if not self._pending:
            self._loop.call_soon(self._flush)
        self._pending.append(bytes(data))

    def _flush(self) -> None:
        pending, self._pending = self._pending, []
        if pending and not self._transport.is_closing():  # closed meanwhile: the peer is gone
            self._transport.write(pending[0] if len(pending) == 1 else b"".join(pending))

    def close(self) -> None:
        self._flush()
        self._transport.close()

    def write_eof(self) -> None:
        self._flush()
        self._transport.write_eof()

    def abort(self) -> None:
        self._pending.clear()
        self._transport.abort()

    def get_write_buffer_size(self) -> int:
        return self._transport.get_write_buffer_size() + sum(map(len, self._pending))

    def __getattr__(self, name: str) -> Any:
        # Everything else (get_extra_info, is_closing, pause_reading, set_protocol ...) as is.
        return getattr(self._transport, name)


class CoalescingHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's HttpToolsProtocol on a `CoalescingTransport`: one send(2) per response."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        wrapped: Any = CoalescingTransport(transport, self.loop)
        super().connection_made(wrapped)
