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
from ..rawclients import (
    ACK,
    DATA,
    ENABLE_CONNECT_PROTOCOL,
    END_HEADERS,
    END_STREAM,
    GOAWAY,
    HEADERS,
    NO_ERROR,
    OP_BINARY,
    OP_CLOSE,
    OP_PING,
    OP_PONG,
    OP_TEXT,
    PING,
    PREFACE,
    RST_STREAM,
    SETTINGS,
    WINDOW_UPDATE,
    RawWS,
    close_payload,
    h2_frame,
    parse_h2_frames,
    ws_frame_extent,
)
from ..rawclients import ws_frame as frame
from .test_websocket_regressions import Reports, echo_app

pytestmark = pytest.mark.timeout(40)

WAIT = 5.0

CARRIERS = pytest.mark.parametrize("carrier", ["http/1.1", "h2"])


class H2WebSocketClient:
    """A WebSocket over one HTTP/2 stream (extended CONNECT), with the same
    methods as the raw HTTP/1.1 client, :class:`tests.rawclients.RawWS`.

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
        self.sock.sendall(PREFACE + h2_frame(SETTINGS, 0, 0))
        deadline = time.monotonic() + WAIT
        assert self._pump(lambda: self.connect_protocol, deadline), "no SETTINGS_ENABLE_CONNECT_PROTOCOL"
        fields = [
            (":method", "CONNECT"), (":protocol", "websocket"), (":scheme", "http"),
            (":path", "/"), (":authority", "localhost"), ("sec-websocket-version", "13"),
        ]  # fmt: skip
        self.sock.sendall(h2_frame(HEADERS, END_HEADERS, self.sid, hpack.Encoder().encode(fields)))
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
            frames, self.raw = parse_h2_frames(self.raw + data)
            for kind, flags, sid, payload in frames:
                self._on_frame(kind, flags, sid, payload)
        return True

    def _on_frame(self, kind: int, flags: int, sid: int, payload: bytes) -> None:
        if kind == SETTINGS and not flags & ACK:
            for i in range(0, len(payload), 6):
                key, value = struct.unpack(">HI", payload[i : i + 6])
                if key == ENABLE_CONNECT_PROTOCOL:
                    self.connect_protocol = value == 1
            self.sock.sendall(h2_frame(SETTINGS, ACK, 0))
        elif kind == PING and not flags & ACK:
            self.sock.sendall(h2_frame(PING, ACK, 0, payload))
        elif kind == GOAWAY:
            self.goaway = True
        elif sid != self.sid:
            return
        elif kind == HEADERS:
            self.status = int(dict(self.decoder.decode(payload, raw=True))[b":status"])
        elif kind == DATA:
            self.buf += payload
            if payload:  # give the credit back at once
                credit = struct.pack(">I", len(payload))
                self.sock.sendall(h2_frame(WINDOW_UPDATE, 0, 0, credit) + h2_frame(WINDOW_UPDATE, 0, sid, credit))
        elif kind == RST_STREAM:
            self.reset = struct.unpack(">I", payload)[0]
        if kind in (DATA, HEADERS) and sid == self.sid and flags & END_STREAM:
            self.ended = True

    def send(self, data: bytes) -> None:
        """WebSocket bytes, in DATA frames (no END_STREAM)."""
        for i in range(0, len(data), 16384):
            self.sock.sendall(h2_frame(DATA, 0, self.sid, data[i : i + 16384]))

    def read_frame(self, timeout: float = WAIT) -> tuple[bool, int, int, bytes]:
        """(fin, rsv bits, opcode, payload) of the next WebSocket frame on the stream."""
        deadline = time.monotonic() + timeout
        if not self._pump(lambda: ws_frame_extent(self.buf) is not None, deadline):
            raise EOFError(f"no complete frame (stream ended={self.ended}, reset={self.reset})")
        found = ws_frame_extent(self.buf)
        assert found is not None
        pos, n = found
        b0 = self.buf[0]
        payload = bytes(self.buf[pos : pos + n])
        del self.buf[: pos + n]
        return bool(b0 & 0x80), b0 & 0x70, b0 & 0x0F, payload

    def frames_until_close(self, timeout: float = WAIT) -> tuple[list[tuple[int, bytes]], int | None]:
        deadline = time.monotonic() + timeout
        before = []
        while True:
            fin, _, opcode, payload = self.read_frame(max(0.0, deadline - time.monotonic()))
            assert fin, "heron sends no fragments"
            if opcode == OP_CLOSE:
                return before, (struct.unpack("!H", payload[:2])[0] if payload else None)
            before.append((opcode, payload))

    def closed_by_server(self, timeout: float = WAIT) -> bool:
        """The stream is over: reset by the server (or the connection closed)."""
        return self._pump(lambda: self.reset is not None, time.monotonic() + timeout) or self.gone

    def close(self) -> None:
        self.sock.close()


def open_ws(srv: RunningServer, carrier: str) -> Any:
    return RawWS.open(srv)[0] if carrier == "http/1.1" else H2WebSocketClient(srv)


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
        assert ws.read_frame()[2:] == (OP_TEXT, b"ping?")
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
        assert ws.read_frame(timeout=WAIT)[2:] == (OP_PING, b"heron")
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
            _, _, opcode, payload = ws.read_frame()
            assert opcode == OP_PING
            ws.send(frame(OP_PONG, payload))
        ws.send(frame(OP_TEXT, b"still here"))
        _, _, opcode, payload = ws.read_frame()
        while opcode == OP_PING:
            ws.send(frame(OP_PONG, payload))
            _, _, opcode, payload = ws.read_frame()
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
        assert ws.read_frame()[2:] == (OP_TEXT, b"up")
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
