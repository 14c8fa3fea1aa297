"""One WebSocket session driver for both carriers: HTTP/1.1 (Upgrade) and HTTP/2 (RFC 8441).

:mod:`heron.transport.ws_session` runs the frame loop, keepalive pings, the
closing handshake and its timeout once, for an HTTP/1.1 connection and for an
HTTP/2 stream alike. Each test here runs the same scenario over both, with
hand-built frames on a real socket (a raw TCP client for HTTP/1.1, the h2
library over a raw socket for HTTP/2), and checks what comes back on the wire.

Over HTTP/2 "the server closed the connection" means the stream is over: once
the closing handshake is done (or timed out) the server sends END_STREAM (the
TCP FIN of RFC 8441) and RST_STREAM (NO_ERROR) if the client has not ended its
side.
"""

from __future__ import annotations

import asyncio
import socket
import struct
import threading
import time
from typing import Any

import hpack
import pytest

from heron.transport import ws_session

from ..conftest import RunningServer, serve
from .test_websocket_regressions import (
    OP_BINARY,
    OP_CLOSE,
    OP_PING,
    OP_PONG,
    OP_TEXT,
    Client,
    Reports,
    close_payload,
    echo_app,
    frame,
)

pytestmark = pytest.mark.timeout(40)

WAIT = 5.0
NO_ERROR = 0

CARRIERS = pytest.mark.parametrize("carrier", ["http/1.1", "h2"])


_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
_DATA, _HEADERS, _RST_STREAM, _SETTINGS, _PING, _GOAWAY, _WINDOW_UPDATE = 0, 1, 3, 4, 6, 7, 8
_END_STREAM, _ACK, _END_HEADERS = 0x1, 0x1, 0x4
_ENABLE_CONNECT_PROTOCOL = 0x8


def _h2_frame(kind: int, flags: int, sid: int, payload: bytes = b"") -> bytes:
    return struct.pack(">I", len(payload))[1:] + bytes([kind, flags]) + struct.pack(">I", sid) + payload


class H2WebSocketClient:
    """A WebSocket over one HTTP/2 stream (extended CONNECT), with the same
    methods as the raw HTTP/1.1 :class:`Client` of the regression tests.

    Hand-made frames rather than the h2 library: h2 refuses every frame after a
    GOAWAY, while a graceful shutdown lets the streams in flight finish.
    """

    def __init__(self, srv: RunningServer) -> None:
        self.sock = socket.create_connection(("127.0.0.1", srv.port), timeout=WAIT)
        self.sid = 1
        self.raw = b""
        self.buf = bytearray()  # WebSocket bytes received on the stream
        self.status: int | None = None
        self.connect_protocol = False
        self.ended = False  # the server's END_STREAM
        self.reset: int | None = None  # the server's RST_STREAM code
        self.gone = False  # EOF
        self.goaway = False
        self.decoder = hpack.Decoder()
        self.sock.sendall(_PREFACE + _h2_frame(_SETTINGS, 0, 0))
        deadline = time.monotonic() + WAIT
        assert self._pump(lambda: self.connect_protocol, deadline), "no SETTINGS_ENABLE_CONNECT_PROTOCOL"
        fields = [
            (":method", "CONNECT"), (":protocol", "websocket"), (":scheme", "http"),
            (":path", "/"), (":authority", "localhost"), ("sec-websocket-version", "13"),
        ]  # fmt: skip
        self.sock.sendall(_h2_frame(_HEADERS, _END_HEADERS, self.sid, hpack.Encoder().encode(fields)))
        assert self._pump(lambda: self.status is not None, deadline), "no answer to the CONNECT"
        assert self.status == 200, self.status

    def _pump(self, until: Any, deadline: float) -> bool:
        """Read until ``until()`` holds (True), or EOF or time is up (False)."""
        while not until():
            if self.gone:
                return False
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            self.sock.settimeout(left)
            try:
                data = self.sock.recv(1 << 20)
            except TimeoutError:
                return False
            except ConnectionResetError:
                data = b""
            if not data:
                self.gone = True
                continue
            self.raw += data
            while len(self.raw) >= 9:
                n = int.from_bytes(self.raw[:3], "big")
                if len(self.raw) < 9 + n:
                    break
                kind, flags, sid = self.raw[3], self.raw[4], int.from_bytes(self.raw[5:9], "big") & 0x7FFFFFFF
                payload = self.raw[9 : 9 + n]
                self.raw = self.raw[9 + n :]
                self._on_frame(kind, flags, sid, payload)
        return True

    def _on_frame(self, kind: int, flags: int, sid: int, payload: bytes) -> None:
        if kind == _SETTINGS and not flags & _ACK:
            for i in range(0, len(payload), 6):
                key, value = struct.unpack(">HI", payload[i : i + 6])
                if key == _ENABLE_CONNECT_PROTOCOL:
                    self.connect_protocol = value == 1
            self.sock.sendall(_h2_frame(_SETTINGS, _ACK, 0))
        elif kind == _PING and not flags & _ACK:
            self.sock.sendall(_h2_frame(_PING, _ACK, 0, payload))
        elif kind == _GOAWAY:
            self.goaway = True
        elif sid != self.sid:
            return
        elif kind == _HEADERS:
            self.status = int(dict(self.decoder.decode(payload, raw=True))[b":status"])
        elif kind == _DATA:
            self.buf += payload
            if payload:  # give the credit back at once
                credit = struct.pack(">I", len(payload))
                self.sock.sendall(_h2_frame(_WINDOW_UPDATE, 0, 0, credit) + _h2_frame(_WINDOW_UPDATE, 0, sid, credit))
        elif kind == _RST_STREAM:
            self.reset = struct.unpack(">I", payload)[0]
        if kind in (_DATA, _HEADERS) and sid == self.sid and flags & _END_STREAM:
            self.ended = True

    def send(self, data: bytes) -> None:
        """WebSocket bytes, in DATA frames (no END_STREAM)."""
        for i in range(0, len(data), 16384):
            self.sock.sendall(_h2_frame(_DATA, 0, self.sid, data[i : i + 16384]))

    def read_frame(self, timeout: float = WAIT) -> tuple[int, bytes]:
        deadline = time.monotonic() + timeout
        if not self._pump(lambda: _frame_at_start(self.buf) is not None, deadline):
            raise EOFError(f"no complete frame (stream ended={self.ended}, reset={self.reset})")
        found = _frame_at_start(self.buf)
        assert found is not None
        pos, n = found
        b0 = self.buf[0]
        assert b0 & 0x80, "heron sends no fragments"
        payload = bytes(self.buf[pos : pos + n])
        del self.buf[: pos + n]
        return b0 & 0x0F, payload

    def frames_until_close(self, timeout: float = WAIT) -> tuple[list[tuple[int, bytes]], int | None]:
        deadline = time.monotonic() + timeout
        before = []
        while True:
            opcode, payload = self.read_frame(max(0.0, deadline - time.monotonic()))
            if opcode == OP_CLOSE:
                return before, (struct.unpack("!H", payload[:2])[0] if payload else None)
            before.append((opcode, payload))

    def closed_by_server(self, timeout: float = WAIT) -> bool:
        """The stream is over: reset by the server (or the connection closed)."""
        return self._pump(lambda: self.reset is not None, time.monotonic() + timeout) or self.gone

    def close(self) -> None:
        self.sock.close()


def _frame_at_start(buf: bytearray) -> tuple[int, int] | None:
    """(header length, payload length) of the unmasked server frame that starts
    ``buf``, once all of it is there."""
    if len(buf) < 2:
        return None
    n, pos = buf[1] & 0x7F, 2
    if n == 126:
        if len(buf) < 4:
            return None
        n, pos = struct.unpack("!H", buf[2:4])[0], 4
    elif n == 127:
        if len(buf) < 10:
            return None
        n, pos = struct.unpack("!Q", buf[2:10])[0], 10
    return (pos, n) if len(buf) >= pos + n else None


def open_ws(srv: RunningServer, carrier: str) -> Any:
    return Client(srv) if carrier == "http/1.1" else H2WebSocketClient(srv)


def h2_reset_is_graceful(ws: Any) -> None:
    if isinstance(ws, H2WebSocketClient):
        assert ws.ended, "END_STREAM comes before RST_STREAM"
        assert ws.reset in (None, NO_ERROR)


# --- the app's answers to messages that came before the peer's Close go out before the Close ---------


@CARRIERS
def test_messages_before_the_peer_close_are_answered_before_the_close_reply(carrier: str) -> None:
    """Autobahn 7.1.6 (scaled to one HTTP/2 DATA frame): two messages, Close and a Ping, in one write."""
    reports = Reports()
    first = b"BAsd7&jh23" * 1000
    with serve(echo_app(reports)) as srv:
        ws = open_ws(srv, carrier)
        ws.send(
            frame(OP_TEXT, first)
            + frame(OP_TEXT, b"Hello World!")
            + frame(OP_CLOSE, close_payload(1000))
            + frame(OP_PING)
        )
        before, code = ws.frames_until_close()
        assert before == [(OP_TEXT, first), (OP_TEXT, b"Hello World!")]  # and no Pong after the Close
        assert code == 1000
        assert ws.closed_by_server()
        h2_reset_is_graceful(ws)
        ws.close()
        assert [kind for kind, _ in reports.until_disconnect()] == ["message", "message", "disconnect"]


@CARRIERS
def test_messages_before_a_protocol_error_are_answered_before_the_close(carrier: str) -> None:
    """Autobahn 3.2 and 5.15: messages (one fragmented), then a frame with RSV2 set, in one write."""
    reports = Reports()
    with serve(echo_app(reports)) as srv:
        ws = open_ws(srv, carrier)
        ws.send(
            frame(OP_TEXT, b"one")
            + frame(OP_BINARY, b"two")
            + frame(OP_TEXT, b"frag", fin=False)
            + frame(0x0, b"ment")
            + frame(OP_TEXT, b"bad", rsv=0x20)
            + frame(OP_PING)
        )
        before, code = ws.frames_until_close()
        assert before == [(OP_TEXT, b"one"), (OP_BINARY, b"two"), (OP_TEXT, b"fragment")]
        assert code == 1002
        assert ws.closed_by_server()
        ws.close()
        assert reports.until_disconnect() == [
            ("message", "one"), ("message", b"two"), ("message", "fragment"), ("disconnect", 1002),
        ]  # fmt: skip


@CARRIERS
def test_peer_close_without_pending_messages_is_answered_at_once(carrier: str) -> None:
    with serve(echo_app()) as srv:
        ws = open_ws(srv, carrier)
        ws.send(frame(OP_TEXT, b"ping?"))
        assert ws.read_frame() == (OP_TEXT, b"ping?")
        ws.send(frame(OP_CLOSE, close_payload(4001, "bye")))
        before, code = ws.frames_until_close()
        assert before == [] and code == 4001
        assert ws.closed_by_server()
        h2_reset_is_graceful(ws)
        ws.close()


# --- the closing handshake is bounded --------------------------------------------------------------------


@CARRIERS
def test_peer_that_never_answers_our_close_is_dropped(carrier: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The app closes; the peer neither answers the Close frame nor ends its side. After
    CLOSE_TIMEOUT the server ends the connection (HTTP/2: resets the stream) instead of
    keeping it forever."""
    monkeypatch.setattr(ws_session, "CLOSE_TIMEOUT", 1.0)  # the server runs in this process
    closed = threading.Event()

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await receive()
        await send({"type": "websocket.accept"})
        await receive()
        await send({"type": "websocket.close", "code": 4000, "reason": "enough"})
        closed.set()

    with serve(app) as srv:
        ws = open_ws(srv, carrier)
        ws.send(frame(OP_TEXT, b"go"))
        before, code = ws.frames_until_close()
        assert before == [] and code == 4000
        assert closed.wait(WAIT)
        # no Close frame back, no EOF / END_STREAM: only the timeout can end it
        assert ws.closed_by_server(timeout=10.0)
        h2_reset_is_graceful(ws)
        ws.close()


@CARRIERS
def test_peer_that_answers_our_close_ends_the_session(carrier: str) -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        await receive()
        await send({"type": "websocket.accept"})
        await receive()
        await send({"type": "websocket.close", "code": 1000})

    with serve(app) as srv:
        ws = open_ws(srv, carrier)
        ws.send(frame(OP_TEXT, b"go"))
        assert ws.frames_until_close() == ([], 1000)
        ws.send(frame(OP_CLOSE, close_payload(1000)))
        assert ws.closed_by_server()
        h2_reset_is_graceful(ws)
        ws.close()


# --- limits ---------------------------------------------------------------------------------------------


@CARRIERS
def test_message_over_max_size_closes_1009_after_the_earlier_ones_are_answered(carrier: str) -> None:
    reports = Reports()
    with serve(echo_app(reports), ws_max_size=1000) as srv:
        ws = open_ws(srv, carrier)
        ws.send(frame(OP_BINARY, b"x" * 1000) + frame(OP_BINARY, b"y" * 1001))
        before, code = ws.frames_until_close()
        assert before == [(OP_BINARY, b"x" * 1000)] and code == 1009
        assert ws.closed_by_server()
        ws.close()
        assert reports.until_disconnect() == [("message", b"x" * 1000), ("disconnect", 1009)]


# --- keepalive and shutdown ----------------------------------------------------------------------------


@CARRIERS
def test_unanswered_keepalive_ping_closes_1011(carrier: str) -> None:
    reports = Reports()
    with serve(echo_app(reports), ws_ping_interval=0.5, ws_ping_timeout=0.5) as srv:
        ws = open_ws(srv, carrier)
        assert ws.read_frame(timeout=WAIT) == (OP_PING, b"heron")
        before, code = ws.frames_until_close()
        assert before == [] and code == 1011
        assert ws.closed_by_server()
        ws.close()
        assert reports.until_disconnect() == [("disconnect", 1011)]


@CARRIERS
def test_answered_keepalive_pings_keep_the_session(carrier: str) -> None:
    with serve(echo_app(), ws_ping_interval=0.5, ws_ping_timeout=0.5) as srv:
        ws = open_ws(srv, carrier)
        for _ in range(3):
            opcode, payload = ws.read_frame()
            assert opcode == OP_PING
            ws.send(frame(OP_PONG, payload))
        ws.send(frame(OP_TEXT, b"still here"))
        opcode, payload = ws.read_frame()
        while opcode == OP_PING:
            ws.send(frame(OP_PONG, payload))
            opcode, payload = ws.read_frame()
        assert (opcode, payload) == (OP_TEXT, b"still here")
        ws.close()


@CARRIERS
def test_graceful_shutdown_closes_1001(carrier: str) -> None:
    reports = Reports()

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await receive()
        await send({"type": "websocket.accept"})
        message = await receive()
        while message["type"] == "websocket.receive":
            await send({"type": "websocket.send", "text": message["text"]})
            message = await receive()
        reports.put("disconnect", message["code"])
        await asyncio.sleep(0)

    with serve(app, timeout_graceful_shutdown=10) as srv:
        ws = open_ws(srv, carrier)
        ws.send(frame(OP_TEXT, b"up"))
        assert ws.read_frame() == (OP_TEXT, b"up")
        stopper = threading.Thread(target=srv.stop)
        stopper.start()
        before, code = ws.frames_until_close()
        assert before == [] and code == 1001
        ws.send(frame(OP_CLOSE, close_payload(1001)))
        assert ws.closed_by_server()
        ws.close()
        stopper.join(15)
        assert not stopper.is_alive()
        assert reports.until_disconnect() == [("disconnect", 1001)]
    assert srv.exit_code == 0


@pytest.mark.parametrize("loop_name", ["asyncio", "uvloop"])
def test_write_pieces_applies_backpressure(loop_name: str) -> None:
    """Big frames are written as (header, payload) without a join; the transport
    must still pause the protocol when the peer reads nothing (the standard
    library's writelines forgets to on 3.12.0-3.13.0)."""
    import socket as socket_module

    from heron.server import _new_loop
    from heron.transport.context import write_pieces

    class Recorder(asyncio.Protocol):
        paused = False

        def pause_writing(self) -> None:
            self.paused = True

    async def main() -> bool:
        ours, theirs = socket_module.socketpair()
        try:
            transport, protocol = await asyncio.get_running_loop().connect_accepted_socket(Recorder, ours)
            write_pieces(transport, (b"h" * 10, b"p" * (8 * 1024 * 1024)))
            paused = protocol.paused
            transport.abort()
            return paused
        finally:
            theirs.close()

    loop = _new_loop(loop_name)
    try:
        assert loop.run_until_complete(main()) is True
    finally:
        loop.close()
