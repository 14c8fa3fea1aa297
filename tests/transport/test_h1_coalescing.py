"""A streamed HTTP/1.1 response's small pieces go out in few writes, in order,
without delay: H1Protocol over a recording transport (no sockets), the bytes
checked exactly."""

from __future__ import annotations

import asyncio
from typing import Any

from heron.config import Config
from heron.transport.context import ServerContext
from heron.transport.h1_response import BIG_PIECE, COALESCE_LIMIT
from heron.transport.http1 import H1Protocol

REQUEST = b"GET /s HTTP/1.1\r\nHost: t\r\n\r\n"


class RecordingTransport(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.writes: list[bytes] = []
        self.closed = False

    def write(self, data: Any) -> None:
        self.writes.append(bytes(data))

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"peername": ("127.0.0.1", 50000), "sockname": ("127.0.0.1", 8000)}.get(name, default)

    def get_write_buffer_size(self) -> int:
        return 0

    def pause_reading(self) -> None: ...

    def resume_reading(self) -> None: ...

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed

    def wire(self) -> bytes:
        return b"".join(self.writes)


def body_of(wire: bytes) -> bytes:
    """The de-chunked body of one response on ``wire``."""
    head, _, rest = wire.partition(b"\r\n\r\n")
    assert b"transfer-encoding: chunked" in head.lower(), head
    body = b""
    while True:
        size_line, _, rest = rest.partition(b"\r\n")
        size = int(size_line, 16)
        if size == 0:
            assert rest == b"\r\n"
            return body
        body += rest[:size]
        assert rest[size : size + 2] == b"\r\n"
        rest = rest[size + 2 :]


async def serve_one(app: Any, request: bytes = REQUEST) -> RecordingTransport:
    loop = asyncio.get_running_loop()
    ctx = ServerContext(Config(app=app, access_log=False), app, loop)
    proto = H1Protocol(ctx)
    transport = RecordingTransport()
    proto.connection_made(transport)
    proto.data_received(request)
    for _ in range(50):
        await asyncio.sleep(0)
    return transport


START = {"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]}


def test_many_small_chunks_take_few_writes_and_arrive_whole() -> None:
    pieces = [bytes([65 + i % 26]) * 1024 for i in range(100)]

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send(START)
        for piece in pieces:
            await send({"type": "http.response.body", "body": piece, "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    transport = asyncio.run(serve_one(app))
    assert body_of(transport.wire()) == b"".join(pieces)
    # ~105 KiB of chunks: one write per COALESCE_LIMIT bytes, plus the last
    assert len(transport.writes) <= 100 * 1030 // COALESCE_LIMIT + 2, len(transport.writes)


def test_a_chunk_goes_out_when_the_app_waits() -> None:
    # server-sent events: each event is on the wire while the app waits for the next
    seen_while_waiting: list[bytes] = []
    transport_box: list[RecordingTransport] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send(START)
        for n in range(3):
            await send({"type": "http.response.body", "body": b"data: %d\n\n" % n, "more_body": True})
            await asyncio.sleep(0.01)
            seen_while_waiting.append(transport_box[0].wire())
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    async def main() -> RecordingTransport:
        loop = asyncio.get_running_loop()
        ctx = ServerContext(Config(app=app, access_log=False), app, loop)
        proto = H1Protocol(ctx)
        transport = RecordingTransport()
        transport_box.append(transport)
        proto.connection_made(transport)
        proto.data_received(REQUEST)
        await asyncio.sleep(0.2)
        return transport

    transport = asyncio.run(main())
    for n, wire in enumerate(seen_while_waiting):
        assert wire.endswith(b"data: %d\n\n\r\n" % n), wire[-40:]
    assert body_of(transport.wire()) == b"data: 0\n\ndata: 1\n\ndata: 2\n\n"


def test_a_big_piece_is_written_as_is_after_what_waits() -> None:
    big = b"B" * BIG_PIECE

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send(START)
        await send({"type": "http.response.body", "body": b"small", "more_body": True})
        await send({"type": "http.response.body", "body": big, "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    transport = asyncio.run(serve_one(app))
    assert body_of(transport.wire()) == b"small" + big
    assert big in transport.writes  # its own buffer: not joined to its chunk framing (no copy)


def test_what_waits_goes_out_before_an_app_error_closes_the_connection() -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send(START)
        await send({"type": "http.response.body", "body": b"partial", "more_body": True})
        raise RuntimeError("boom")

    transport = asyncio.run(serve_one(app))
    wire = transport.wire()
    assert transport.closed
    assert b"\r\n\r\n7\r\npartial\r\n" in wire  # the chunk sent, then the connection closed
    assert not wire.endswith(b"0\r\n\r\n")  # no terminating chunk: the client sees it incomplete


def _whole(body: bytes, headers: list[tuple[bytes, bytes]]) -> Any:
    """An app that answers ``body`` in one body message."""

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    return app


def test_a_big_whole_body_goes_out_beside_its_head() -> None:
    big = b"W" * (4 * BIG_PIECE)
    app = _whole(big, [(b"content-length", b"%d" % len(big))])
    transport = asyncio.run(serve_one(app))
    head, _, body = transport.wire().partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 OK\r\n") and b"content-length: %d" % len(big) in head
    assert body == big
    assert big in transport.writes  # its own buffer, not joined to the head (no copy)
    assert not transport.closed  # the connection stays open for the next request


def test_a_big_whole_body_without_length_is_one_chunk_and_the_end() -> None:
    big = b"C" * BIG_PIECE
    transport = asyncio.run(serve_one(_whole(big, [])))
    assert body_of(transport.wire()) == big
    assert transport.wire().endswith(b"\r\n0\r\n\r\n")
    assert big in transport.writes


def test_a_big_whole_body_to_head_writes_only_the_head() -> None:
    big = b"H" * BIG_PIECE
    app = _whole(big, [(b"content-length", b"%d" % len(big))])
    transport = asyncio.run(serve_one(app, b"HEAD /s HTTP/1.1\r\nHost: t\r\n\r\n"))
    wire = transport.wire()
    assert wire.endswith(b"\r\n\r\n") and b"content-length: %d" % len(big) in wire
    assert b"H" * 100 not in wire


def test_a_big_whole_body_that_contradicts_its_length_is_a_500() -> None:
    big = b"X" * BIG_PIECE
    for declared in (len(big) - 1, len(big) + 1):  # longer, then shorter than declared
        app = _whole(big, [(b"content-length", b"%d" % declared)])
        transport = asyncio.run(serve_one(app))
        wire = transport.wire()
        assert wire.startswith(b"HTTP/1.1 500 "), wire[:60]
        assert b"X" * 100 not in wire  # nothing of the bad response went out
        assert transport.closed
