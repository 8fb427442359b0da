"""serving/http_protocol.py: one send per response, the same bytes and order as uvicorn's own protocol."""

from __future__ import annotations

import asyncio
import socket
from typing import Any

import httpx

from serving.http_protocol import CoalescingTransport
from tests.support.serving import uvicorn_thread


class _Transport:
    """Records what reaches the socket."""

    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.closed = False
        self.aborted = False

    def write(self, data: bytes) -> None:
        assert not self.closed
        self.writes.append(data)

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.aborted = self.closed = True

    def get_write_buffer_size(self) -> int:
        return 0

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"peername": ("127.0.0.1", 1)}.get(name, default)


def test_writes_of_one_loop_step_go_out_as_one_write_in_order() -> None:
    asyncio.run(_one_write_per_step())


async def _one_write_per_step() -> None:
    inner = _Transport()
    t = CoalescingTransport(inner, asyncio.get_running_loop())  # type: ignore[arg-type]
    t.write(b"HTTP/1.1 200 OK\r\n\r\n")
    t.write(b"body")
    assert inner.writes == [] and t.get_write_buffer_size() == len(b"HTTP/1.1 200 OK\r\n\r\nbody")
    await asyncio.sleep(0)
    assert inner.writes == [b"HTTP/1.1 200 OK\r\n\r\nbody"]
    t.write(b"next")
    await asyncio.sleep(0)
    assert inner.writes == [b"HTTP/1.1 200 OK\r\n\r\nbody", b"next"]
    assert t.get_extra_info("peername") == ("127.0.0.1", 1)  # anything else is the transport's


def test_close_flushes_first_abort_drops_and_a_closed_peer_gets_nothing() -> None:
    asyncio.run(_close_abort_and_lost_peer())


async def _close_abort_and_lost_peer() -> None:
    loop = asyncio.get_running_loop()
    inner = _Transport()
    t = CoalescingTransport(inner, loop)  # type: ignore[arg-type]
    t.write(b"last answer")
    t.close()  # e.g. `Connection: close`: the answer goes out before the FIN
    assert inner.writes == [b"last answer"] and inner.closed
    await asyncio.sleep(0)
    assert inner.writes == [b"last answer"]

    inner = _Transport()
    t = CoalescingTransport(inner, loop)  # type: ignore[arg-type]
    t.write(b"never sent")
    t.abort()
    await asyncio.sleep(0)
    assert inner.writes == [] and inner.aborted

    inner = _Transport()
    t = CoalescingTransport(inner, loop)  # type: ignore[arg-type]
    t.write(b"to a peer that left")
    inner.closed = True  # connection_lost closed it before the flush
    await asyncio.sleep(0)
    assert inner.writes == []


def _raw_exchange(base: str, request: bytes) -> bytes:
    host, port = base.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=5) as s:
        s.sendall(request)
        chunks = []
        while data := s.recv(65536):
            chunks.append(data)
    return b"".join(chunks)


def test_uvicorn_with_the_protocol_answers_keep_alive_close_and_streams() -> None:
    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        body = (await receive()).get("body", b"")
        if scope["path"] == "/stream":  # chunked, over several loop steps
            await send({"type": "http.response.start", "status": 200, "headers": []})
            for part in (b"a", b"b", b"c"):
                await send({"type": "http.response.body", "body": part, "more_body": True})
                await asyncio.sleep(0.01)
            await send({"type": "http.response.body", "body": b""})
            return
        payload = b"echo:" + body
        headers = [(b"content-length", str(len(payload)).encode())]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": payload})

    with uvicorn_thread(app) as base:
        with httpx.Client(base_url=base, timeout=5) as c:  # keep-alive: many answers on one connection
            answers = [c.post("/echo", content=f"n{i}".encode()) for i in range(50)]
            stream = c.get("/stream")
        assert [r.content for r in answers] == [f"echo:n{i}".encode() for i in range(50)]
        assert stream.content == b"abc"
        raw = _raw_exchange(base, b"POST /echo HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: 2\r\n\r\nhi")
        assert raw.startswith(b"HTTP/1.1 200 OK\r\n") and raw.endswith(b"\r\n\r\necho:hi")
