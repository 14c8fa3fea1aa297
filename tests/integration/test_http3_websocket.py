"""WebSocket over HTTP/3 (RFC 9220, extended CONNECT), through real UDP sockets.

The client is aioquic's (its H3Connection sends the extended CONNECT's header
section and DATA frames); the WebSocket frames in the DATA are built and read
here (tests/rawclients.py), so the session is checked frame by frame.
"""

from __future__ import annotations

import asyncio
import struct
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from aioquic.h3.connection import ErrorCode, Setting

from ..conftest import RunningServer, serve
from ..rawclients import OP_BINARY, OP_CLOSE, OP_TEXT, close_payload, ws_frame, ws_frame_extent
from .test_http3 import Certs, Client, Response, certs, h3_client, quic_port, run_client

pytestmark = pytest.mark.timeout(30)

__all__ = ["certs"]  # (the fixture, shared with test_http3)

SEEN: dict[str, Any] = {}
HOLD_COUNT, HOLD_SIZE = 64, 65536  # 4 MiB offered to an app that reads nothing for a second


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "websocket":
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"plain"})
        return
    path = scope["path"]
    SEEN["scope"] = {k: scope[k] for k in ("http_version", "scheme", "path", "query_string", "subprotocols")}
    assert (await receive())["type"] == "websocket.connect"
    if path == "/deny":
        await send({"type": "websocket.close", "code": 1000})  # before accept: 403
        return
    await send({"type": "websocket.accept", "subprotocol": "chat" if "chat" in scope["subprotocols"] else None})
    if path == "/hold":  # reads nothing for a while, then everything
        await asyncio.sleep(1.0)
        count = size = 0
        while size < HOLD_COUNT * HOLD_SIZE:
            message = await receive()
            count, size = count + 1, size + len(message["bytes"])
        await send({"type": "websocket.send", "text": f"{count} {size}"})
        await send({"type": "websocket.close", "code": 1000})
        return
    if path == "/bye":
        await send({"type": "websocket.close", "code": 4001, "reason": "bye"})
        SEEN["disconnect"] = await receive()
        return
    while True:
        message = await receive()
        if message["type"] == "websocket.disconnect":
            SEEN["disconnect"] = message
            return
        if message.get("text") is not None:
            await send({"type": "websocket.send", "text": "echo:" + message["text"]})
        else:
            await send({"type": "websocket.send", "bytes": message["bytes"][::-1]})


@contextmanager
def ws_server(certs: Certs, **settings: Any) -> Iterator[RunningServer]:
    SEEN.clear()
    settings.setdefault("timeout_graceful_shutdown", 5)
    with serve(
        app, quic_bind=("127.0.0.1:0",), ssl_certfile=certs.certfile, ssl_keyfile=certs.keyfile, **settings
    ) as running:
        yield running


async def until(condition: Callable[[], bool], timeout: float = 3.0) -> None:
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.005)


def connect_request(
    client: Client,
    path: str = "/ws",
    extra: list[tuple[bytes, bytes]] | None = None,
    protocol: bytes = b"websocket",
    version: bytes = b"13",
) -> int:
    headers = [
        (b":method", b"CONNECT"),
        (b":protocol", protocol),
        (b":scheme", b"https"),
        (b":authority", b"localhost"),
        (b":path", path.encode()),
        (b"sec-websocket-version", version),
    ]
    return client.request(headers=headers + (extra or []), end=False)


class Frames:
    """The server's WebSocket frames on one stream (read from the Response's DATA bytes)."""

    def __init__(self, response: Response) -> None:
        self.response = response
        self.pos = 0

    async def next(self, timeout: float = 3.0) -> tuple[int, int, bytes]:
        """(rsv bits, opcode, payload)."""
        found = None

        def complete() -> bool:
            nonlocal found
            found = ws_frame_extent(self.response.body[self.pos :])
            return found is not None or (self.response.done.is_set() and found is None)

        await until(complete, timeout)
        assert found is not None, f"stream ended: {self.response.body[self.pos :]!r}"
        head, size = found
        data = self.response.body[self.pos :]
        self.pos += head + size
        assert not data[1] & 0x80  # server frames are not masked
        return data[0] & 0x70, data[0] & 0x0F, data[head : head + size]


def send_frame(client: Client, sid: int, frame: bytes, end: bool = False) -> None:
    client.h3.send_data(sid, frame, end_stream=end)
    client.transmit()


def test_websocket_over_http3_echoes_text_and_binary_and_closes(certs: Certs) -> None:
    async def main(port: int) -> tuple[Any, ...]:
        async with h3_client(certs, port) as client:
            await until(lambda: bool(client.h3.received_settings))
            settings = client.h3.received_settings or {}
            sid = connect_request(client, "/ws?x=1", [(b"sec-websocket-protocol", b"chat, other")])
            response = client.responses[sid]
            await until(lambda: bool(response.headers))
            frames = Frames(response)
            send_frame(client, sid, ws_frame(OP_TEXT, b"hi"))
            text = await frames.next()
            send_frame(client, sid, ws_frame(OP_BINARY, b"\x00\x01\x02"))
            binary = await frames.next()
            send_frame(client, sid, ws_frame(OP_CLOSE, close_payload(1000, "done")), end=True)
            close = await frames.next()
            await asyncio.wait_for(response.done.wait(), 3)  # FIN after the closing handshake
            after = await client.response(client.request("GET", "/"))  # the connection serves on
            return settings, dict(response.headers), text, binary, close, response.reset, after.status

    with ws_server(certs) as running:
        settings, headers, text, binary, close, reset, status = run_client(main(quic_port(running)))
    assert settings.get(Setting.ENABLE_CONNECT_PROTOCOL) == 1
    assert headers[b":status"] == b"200" and headers[b"sec-websocket-protocol"] == b"chat"
    assert SEEN["scope"] == {
        "http_version": "3",
        "scheme": "wss",
        "path": "/ws",
        "query_string": b"x=1",
        "subprotocols": ["chat", "other"],
    }
    assert text == (0, OP_TEXT, b"echo:hi")
    assert binary == (0, OP_BINARY, b"\x02\x01\x00")
    assert close == (0, OP_CLOSE, close_payload(1000))  # (the reply carries the code)
    assert reset is None and status == 200
    assert SEEN["disconnect"]["code"] == 1000


def test_permessage_deflate_over_http3(certs: Certs) -> None:
    async def main(port: int) -> tuple[dict[bytes, bytes], tuple[int, int, bytes]]:
        async with h3_client(certs, port) as client:
            sid = connect_request(client, extra=[(b"sec-websocket-extensions", b"permessage-deflate")])
            response = client.responses[sid]
            await until(lambda: bool(response.headers))
            deflate = zlib.compressobj(wbits=-15)
            compressed = deflate.compress(b"squeeze " * 50) + deflate.flush(zlib.Z_SYNC_FLUSH)
            assert compressed.endswith(b"\x00\x00\xff\xff")
            send_frame(client, sid, ws_frame(OP_TEXT, compressed[:-4], rsv=0x40))
            return dict(response.headers), await Frames(response).next()

    with ws_server(certs) as running:
        headers, (rsv, opcode, payload) = run_client(main(quic_port(running)))
    assert headers[b"sec-websocket-extensions"].startswith(b"permessage-deflate")
    assert rsv == 0x40 and opcode == OP_TEXT  # the answer is compressed too
    assert zlib.decompressobj(wbits=-15).decompress(payload + b"\x00\x00\xff\xff") == b"echo:" + b"squeeze " * 50


def test_the_apps_close_code_reaches_the_client(certs: Certs) -> None:
    async def main(port: int) -> tuple[tuple[int, int, bytes], bool]:
        async with h3_client(certs, port) as client:
            sid = connect_request(client, "/bye")
            response = client.responses[sid]
            close = await Frames(response).next()
            send_frame(client, sid, ws_frame(OP_CLOSE, close[2]), end=True)
            await asyncio.wait_for(response.done.wait(), 3)
            return close, response.reset is None

    with ws_server(certs) as running:
        (_, opcode, payload), clean = run_client(main(quic_port(running)))
    assert opcode == OP_CLOSE and struct.unpack("!H", payload[:2])[0] == 4001 and payload[2:] == b"bye"
    assert clean
    assert SEEN["disconnect"]["code"] == 4001


@pytest.mark.parametrize(
    ("path", "version", "protocol", "status"),
    [
        ("/deny", b"13", b"websocket", 403),  # the app closes before accept
        ("/ws", b"8", b"websocket", 426),
        ("/ws", b"13", b"chat", 400),  # :protocol other than websocket
    ],
    ids=["app-denies", "bad-version", "other-protocol"],
)
def test_a_refused_handshake_gets_its_status(
    certs: Certs, path: str, version: bytes, protocol: bytes, status: int
) -> None:
    async def main(port: int) -> tuple[Response, int]:
        async with h3_client(certs, port) as client:
            response = await client.response(connect_request(client, path, protocol=protocol, version=version))
            after = await client.response(client.request("GET", "/"))
            return response, after.status

    with ws_server(certs) as running:
        response, after = run_client(main(quic_port(running)))
    assert response.status == status
    if status == 426:
        assert dict(response.headers)[b"sec-websocket-version"] == b"13"
    assert after == 200
    if status != 403:
        assert "scope" not in SEEN  # no app ran


def test_without_websocket_extended_connect_is_not_advertised(certs: Certs) -> None:
    async def main(port: int) -> tuple[dict[int, int], Response]:
        async with h3_client(certs, port) as client:
            await until(lambda: bool(client.h3.received_settings))
            return client.h3.received_settings or {}, await client.response(connect_request(client))

    with ws_server(certs, ws="none") as running:
        settings, response = run_client(main(quic_port(running)))
    assert Setting.ENABLE_CONNECT_PROTOCOL not in settings
    assert response.reset == ErrorCode.H3_MESSAGE_ERROR  # :protocol without extended CONNECT


def test_a_client_reset_disconnects_the_app(certs: Certs) -> None:
    async def main(port: int) -> None:
        async with h3_client(certs, port) as client:
            sid = connect_request(client)
            response = client.responses[sid]
            await until(lambda: bool(response.headers))
            client._quic.reset_stream(sid, ErrorCode.H3_REQUEST_CANCELLED)
            client._quic.stop_stream(sid, ErrorCode.H3_REQUEST_CANCELLED)
            client.transmit()
            await until(lambda: "disconnect" in SEEN)

    with ws_server(certs) as running:
        run_client(main(quic_port(running)))
    assert SEEN["disconnect"]["code"] == 1006


def test_shutdown_closes_the_websocket_with_1001(certs: Certs) -> None:
    with ws_server(certs) as running:

        async def main(port: int) -> tuple[int, int, bytes]:
            async with h3_client(certs, port) as client:
                sid = connect_request(client)
                response = client.responses[sid]
                await until(lambda: bool(response.headers))
                running.call(running.server.shutdown)
                close = await Frames(response).next()
                send_frame(client, sid, ws_frame(OP_CLOSE, close[2]), end=True)
                return close

        _, opcode, payload = run_client(main(quic_port(running)))
    assert opcode == OP_CLOSE and struct.unpack("!H", payload[:2])[0] == 1001


def test_reading_pauses_by_withholding_the_streams_credit(certs: Certs) -> None:
    async def main(port: int) -> tuple[int, tuple[int, int, bytes]]:
        async with h3_client(certs, port) as client:
            sid = connect_request(client, "/hold")
            response = client.responses[sid]
            await until(lambda: bool(response.headers))
            for _ in range(HOLD_COUNT):
                client.h3.send_data(sid, ws_frame(OP_BINARY, b"m" * HOLD_SIZE), end_stream=False)
            client.transmit()
            await asyncio.sleep(0.7)  # the app reads nothing yet
            allowed = client._quic._streams[sid].max_stream_data_remote  # what the server let us send
            return allowed, await Frames(response).next(5.0)

    with ws_server(certs, ws_max_size=HOLD_SIZE) as running:
        allowed, (_, opcode, payload) = run_client(main(quic_port(running)), timeout=15)
    # the session's budget (1 MiB at least) and what waits unparsed, plus one stream window: not the 4 MiB
    assert allowed < 2 * 1024 * 1024
    assert opcode == OP_TEXT and payload == b"%d %d" % (HOLD_COUNT, HOLD_COUNT * HOLD_SIZE)  # then all of it
