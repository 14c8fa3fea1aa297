"""WebSocket over an HTTP/1.1 connection (RFC 6455 Upgrade), on asyncio.

:class:`H1Protocol` hands a connection over with
:meth:`WebSocketProtocol.take_over` once it has parsed a valid upgrade
request; from then on this protocol owns the transport. It moves frames
between the socket, the sans-IO :class:`~heron.protocol.websocket.WebSocketConnection`
and one :class:`~heron.asgi.websocket.WebSocketCycle`.

Liveness: after ``ws_ping_interval`` seconds without any inbound frame a ping
is sent; if nothing at all arrives within ``ws_ping_timeout`` after it, the
connection is closed with 1011. Any inbound frame counts, not only the pong.
After we send a Close frame the peer has ``CLOSE_TIMEOUT`` seconds to answer
before the TCP connection is dropped.

End of input (the peer's Close frame, or a protocol error that fails the
connection): reading stops at once, but messages that arrived before it and
still wait in the app's queue are handed to the app first, and our Close frame
goes out only once the app has taken them all (or after ``DRAIN_TIMEOUT``).
So the answers to those messages precede the Close frame instead of being
dropped, which is what RFC 6455 5.5.1 permits ("MAY delay sending a Close
frame until its current message is sent") and what Autobahn's 3.2, 4.x, 5.15
and 7.1.6 check.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any, Iterable

from ..asgi.websocket import WebSocketCycle, websocket_scope
from ..protocol.errors import LocalProtocolError, WebSocketProtocolError
from ..protocol.http1 import H1Connection, status_line
from ..protocol.permessage_deflate import DeflateSettings, negotiate
from ..protocol.websocket import (
    NEED_DATA,
    BytesMessage,
    CloseReceived,
    HandshakeRequest,
    Ping,
    TextMessage,
    WebSocketConnection,
    accept_key,
    handshake_response_headers,
)
from .context import ServerContext, error_logger

if TYPE_CHECKING:
    from ..protocol.http1 import Request

CLOSE_TIMEOUT = 5.0
#: How long the app gets to take the messages queued before the peer's Close
#: (or a protocol error) before our Close frame is sent anyway.
DRAIN_TIMEOUT = 1.0

_NO_DEADLINE = 0
_PING_DUE = 1
_PONG_DUE = 2
_CLOSE_DUE = 3
_WRITE_DUE = 4
_DRAIN_DUE = 5


class WebSocketProtocol(asyncio.Protocol):
    __slots__ = (
        "ctx",
        "transport",
        "http",
        "handshake",
        "cycle",
        "conn",
        "peer",
        "deadline",
        "deadline_kind",
        "writing_paused",
        "_drain_waiter",
        "_pending",
        "_closed",
        "_opened_at",
        "_bytes_in",
        "_bytes_out",
        "_target",
        "_request",
        "_input_end",
    )

    def __init__(self, ctx: ServerContext, http: H1Connection, handshake: HandshakeRequest) -> None:
        self.ctx = ctx
        self.transport: asyncio.Transport = None  # type: ignore[assignment]
        self.http = http  # still used for a denial response
        self.handshake = handshake
        self.cycle: WebSocketCycle = None  # type: ignore[assignment]
        self.conn: WebSocketConnection | None = None
        self.peer = ""
        self.deadline = 0.0
        self.deadline_kind = _NO_DEADLINE
        self.writing_paused = False
        self._drain_waiter: asyncio.Future[None] | None = None
        self._pending = bytearray()  # bytes that arrived before the handshake completed
        self._closed = False
        self._opened_at = ctx.loop.time()
        self._bytes_in = 0
        self._bytes_out = 0
        self._target = ""
        self._request: Request | None = None  # for the access log's header atoms
        # (close code, reason, the peer's Close or None for a protocol error):
        # set when input ended while messages still waited for the app
        self._input_end: tuple[int, str, CloseReceived | None] | None = None

    @classmethod
    def take_over(
        cls,
        ctx: ServerContext,
        transport: asyncio.Transport,
        http: H1Connection,
        request: "Request",
        handshake: HandshakeRequest,
        *,
        scheme: str,
        client: tuple[str, int] | None,
        server: tuple[str, int | None] | None,
        peer: str,
        leftover: bytes,
        tls: dict[str, Any] | None = None,
    ) -> "WebSocketProtocol":
        self = cls(ctx, http, handshake)
        self.transport = transport
        self.peer = peer
        self._target = request.target.decode("ascii")
        self._request = request
        self._pending += leftover
        self._bytes_in += len(leftover)  # frames that arrived with the handshake
        ctx.connections.add(self)
        transport.set_protocol(self)
        scope = websocket_scope(
            "1.1",
            "wss" if scheme == "https" else "ws",
            request.path,
            request.query,
            ctx.root_path,
            request.headers,
            client,
            server,
            handshake.subprotocols,
            ctx.lifespan_state,
        )
        if tls is not None:
            scope["extensions"]["tls"] = tls
        self.cycle = WebSocketCycle(scope, self, max_queue=ctx.config.ws_max_queue)
        self.cycle.task = task = ctx.loop.create_task(self.cycle.run(ctx.app, ctx.tasks))
        ctx.tasks.add(task)
        return self

    # --- asyncio callbacks -------------------------------------------------

    def data_received(self, data: bytes) -> None:
        self._bytes_in += len(data)
        conn = self.conn
        if conn is None:
            # The client must wait for our 101; keep (a bounded amount of) what it sent early.
            self._pending += data
            if len(self._pending) > 65536:
                self.transport.pause_reading()
            return
        conn.receive_data(data)
        if self.deadline_kind == _PING_DUE or self.deadline_kind == _PONG_DUE:
            self._schedule_ping()
        self._process()

    def eof_received(self) -> bool | None:
        if self.conn is not None:
            self.conn.receive_data(b"")
            self._process()
        else:
            self.cycle.feed_disconnect(1006)
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        was_closed = self._closed
        self._closed = True
        self.deadline = 0.0
        self.ctx.connections.discard(self)
        self.cycle.feed_disconnect(1006)
        waiter = self._drain_waiter
        if waiter is not None:
            self._drain_waiter = None
            if not waiter.done():
                waiter.set_result(None)
        # One record per session, refused handshakes (403/500/denial) included.
        self._log_session()

    def pause_writing(self) -> None:
        self.writing_paused = True
        timeout = self.ctx.config.timeout_write
        if timeout and self.deadline_kind != _CLOSE_DUE:
            self.deadline = self.ctx.clock + timeout
            self.deadline_kind = _WRITE_DUE

    def resume_writing(self) -> None:
        self.writing_paused = False
        if self.deadline_kind == _WRITE_DUE:
            self._schedule_ping()
        waiter = self._drain_waiter
        if waiter is not None:
            self._drain_waiter = None
            if not waiter.done():
                waiter.set_result(None)

    # --- frames ------------------------------------------------------------

    def _process(self) -> None:
        conn = self.conn
        assert conn is not None
        cycle = self.cycle
        while True:
            try:
                event = conn.next_event()
            except WebSocketProtocolError as exc:
                error_logger.info("WebSocket protocol error from %s: %s (%d)", self.peer, exc, exc.close_code)
                self._end_input(exc.close_code, str(exc), None)
                return
            kind = event.__class__
            if kind is TextMessage:
                cycle.feed_message(event.text)  # type: ignore[union-attr]
            elif kind is BytesMessage:
                cycle.feed_message(event.data)  # type: ignore[union-attr]
            elif event is NEED_DATA:
                return
            elif kind is Ping:
                self._write(conn.pong_reply(event))  # type: ignore[arg-type]
            elif kind is CloseReceived:
                self._end_input(event.code, event.reason, event)  # type: ignore[union-attr, arg-type]
                return
            # Pong: liveness is already recorded by data_received

    def _end_input(self, code: int, reason: str, close: CloseReceived | None) -> None:
        """The peer's Close arrived, or its input failed: finish once the app has its messages."""
        if self._closed:
            return
        # The connection object ignores anything after this point anyway.
        self.transport.pause_reading()
        self._input_end = (code, reason, close)
        task = self.cycle.task
        if (
            not self.cycle.pending_messages
            or (self.conn is not None and self.conn.close_sent)
            or (task is not None and task.done())
        ):
            self._finish_input()
            return
        # Finish when the app asks for more than is queued (it has handled
        # the rest, replies included), or after DRAIN_TIMEOUT at the latest.
        self.cycle.on_idle = self._finish_input
        self.deadline = self.ctx.clock + DRAIN_TIMEOUT
        self.deadline_kind = _DRAIN_DUE

    def _finish_input(self) -> None:
        end = self._input_end
        self._input_end = None
        if end is None or self._closed:
            return
        code, reason, close = end
        conn = self.conn
        assert conn is not None
        if not conn.close_sent:
            if close is None:
                self._write(conn.send_close(code, reason[:123]))
            else:
                self._write(conn.close_reply(close))
        self.cycle.feed_disconnect(code, reason)
        # RFC 6455 7.1.1: the server closes the TCP connection first.
        self._close_transport()

    def _write(self, data: bytes) -> None:
        if data and not self._closed:
            self._bytes_out += len(data)
            self.transport.write(data)

    # --- WebSocketStream interface (called by the cycle) ---------------------

    def accept(self, subprotocol: str | None, headers: Iterable[tuple[bytes, bytes]]) -> None:
        if self._closed:
            return
        config = self.ctx.config
        extension_header = None
        params = None
        if config.ws_per_message_deflate and self.handshake.extensions:
            agreed = negotiate(self.handshake.extensions, DeflateSettings())
            if agreed is not None:
                extension_header, params = agreed
        assert self.handshake.key is not None
        fields = handshake_response_headers(
            accept_key(self.handshake.key),
            subprotocol,
            extension_header,
            headers,
            offered_subprotocols=self.handshake.subprotocols,
        )
        head = [status_line(101), self.ctx.server_line, self.ctx.date_line]
        head.extend(name + b": " + value + b"\r\n" for name, value in fields)
        head.append(b"\r\n")
        self._write(b"".join(head))
        self.conn = conn = WebSocketConnection(max_message_size=config.ws_max_size, deflate=params)
        self._schedule_ping()
        if self.ctx.shutting_down:
            # accepted while the server stops: the session ends at once (1001),
            # rather than living until the graceful-shutdown timeout
            self.shutdown()
            return
        if self._pending:
            conn.receive_data(bytes(self._pending))
            self._pending.clear()
            self.transport.resume_reading()
            self._process()

    def deny(self, status: int, headers: Iterable[tuple[bytes, bytes]], body: bytes, more_body: bool) -> None:
        if self._closed:
            return
        ctx = self.ctx
        http = self.http
        head = http.send_response(
            status,
            headers,
            server_line=ctx.server_line,
            date_line=ctx.date_line,
            extra_lines=ctx.extra_lines,
            close=True,
        )
        data = http.send_data(body) if body else b""
        self._write(head + data + (b"" if more_body else http.send_end()))
        if not more_body:
            self._close_transport()

    def deny_body(self, body: bytes, more_body: bool) -> None:
        if self._closed:
            return
        data = self.http.send_data(body) if body else b""
        if not more_body:
            data += self.http.send_end()
        self._write(data)
        if not more_body:
            self._close_transport()

    def send_message(self, data: str | bytes) -> None:
        conn = self.conn
        if conn is None or self._closed or conn.close_sent:
            return  # the cycle already reported the disconnect
        self._write(conn.send_text(data) if type(data) is str else conn.send_bytes(data))  # type: ignore[arg-type]

    def close(self, code: int, reason: str) -> None:
        conn = self.conn
        if conn is None or self._closed or conn.close_sent:
            return
        self._write(conn.send_close(code, reason))
        if conn.close_received or self._input_end is not None:
            # Nothing more will be read: the peer closed, or its input failed.
            self._input_end = None
            self._close_transport()
        else:
            self.deadline = self.ctx.clock + CLOSE_TIMEOUT
            self.deadline_kind = _CLOSE_DUE

    def abort(self) -> None:
        self._close_transport()

    def pause_reading(self) -> None:
        if not self._closed:
            self.transport.pause_reading()

    def resume_reading(self) -> None:
        if not self._closed and self._input_end is None:
            self.transport.resume_reading()

    async def drain(self) -> None:
        if not self.writing_paused or self._closed:
            return
        waiter = self._drain_waiter
        if waiter is None:
            waiter = self._drain_waiter = self.ctx.loop.create_future()
        await waiter

    # --- deadlines and shutdown --------------------------------------------

    def _schedule_ping(self) -> None:
        interval = self.ctx.config.ws_ping_interval
        if interval:
            self.deadline = self.ctx.clock + interval
            self.deadline_kind = _PING_DUE
        else:
            self.deadline = 0.0
            self.deadline_kind = _NO_DEADLINE

    def on_deadline(self) -> None:
        kind = self.deadline_kind
        self.deadline = 0.0
        self.deadline_kind = _NO_DEADLINE
        conn = self.conn
        if self._closed:
            return
        if kind == _PING_DUE and conn is not None and not conn.close_sent:
            self._write(conn.send_ping(b"heron"))
            timeout = self.ctx.config.ws_ping_timeout
            if timeout:
                self.deadline = self.ctx.clock + timeout
                self.deadline_kind = _PONG_DUE
        elif kind == _PONG_DUE and conn is not None:
            error_logger.info("WebSocket ping timeout for %s: closing with 1011", self.peer)
            if not conn.close_sent:
                self._write(conn.send_close(1011, "keepalive ping timeout"))
            self.cycle.feed_disconnect(1011, "keepalive ping timeout")
            self._close_transport()
        elif kind == _DRAIN_DUE:
            self._finish_input()  # the app did not take its last messages in time
        elif kind == _WRITE_DUE:
            error_logger.info("Closing WebSocket from %s: client stopped reading", self.peer)
            self.cycle.feed_disconnect(1006)
            self.transport.abort()
            self._closed = True
        else:  # closing handshake timed out
            self.cycle.feed_disconnect(1006)
            self._close_transport()

    def shutdown(self) -> None:
        """Graceful shutdown: close 1001 (Going Away); the app gets its disconnect."""
        conn = self.conn
        if conn is None:
            return  # still in the handshake: the app decides, shutdown timeout bounds it
        if not conn.close_sent and not self._closed:
            self.close(1001, "server shutting down")
            self.cycle.feed_disconnect(1001, "server shutting down")

    def _close_transport(self) -> None:
        if not self._closed:
            self._closed = True
            self.deadline = 0.0
            self.transport.close()

    def _log_session(self) -> None:
        observer = self.ctx.observer
        if observer is None:
            return
        code = self.cycle.close_code if self.cycle.close_code is not None else 1006
        observer.websocket(
            self.peer, self._request, self._target, code, self._bytes_in, self._bytes_out, self._opened_at
        )


__all__ = ["WebSocketProtocol", "LocalProtocolError"]
