"""WebSocket over an HTTP/1.1 connection (RFC 6455 Upgrade), on asyncio.

:class:`H1Protocol` hands a connection over with
:meth:`WebSocketProtocol.take_over` once it has parsed a valid upgrade
request; from then on this protocol owns the transport. It is the
:class:`~heron.transport.ws_session.WebSocketLink` of one
:class:`~heron.transport.ws_session.WebSocketSession`, which holds everything
that is not about the socket: the frame loop, keepalive pings, the closing
handshake and its timeout, and sending our Close only after the app has taken
the messages that arrived before the peer's (the same code serves WebSockets
over HTTP/2).

What stays here: the 101 answer (or a denial response, through the
:class:`~heron.protocol.http1.H1Connection` that parsed the request), socket
writes (a big message payload is handed to ``writelines`` next to its frame
header, not copied behind it), pausing reading, the ``timeout_write``
deadline for a client that reads nothing, and the per-session access-log
record.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from time import perf_counter
from typing import TYPE_CHECKING, Any

from ..asgi.websocket import websocket_scope
from ..protocol.errors import LocalProtocolError
from ..protocol.http1 import H1Connection, status_line
from ..protocol.ws_handshake import HandshakeRequest, accept_key, handshake_response_headers
from .context import ServerContext, error_logger, write_pieces
from .ws_session import WebSocketSession

if TYPE_CHECKING:
    from ..protocol.http1 import Request

_WRITE_DEADLINE = 1  # (its only deadline)


class WebSocketProtocol(asyncio.Protocol):
    __slots__ = (
        "ctx",
        "transport",
        "http",
        "session",
        "peer",
        "deadline",
        "deadline_kind",
        "deadline_slot",
        "writing_paused",
        "_drain_waiter",
        "_closed",
        "_opened_at",
        "_bytes_in",
        "_bytes_out",
        "_target",
        "_request",
    )

    def __init__(self, ctx: ServerContext, http: H1Connection) -> None:
        self.ctx = ctx
        self.transport: asyncio.Transport = None  # type: ignore[assignment]
        self.http = http  # still used for a denial response
        self.session: WebSocketSession = None  # type: ignore[assignment]
        self.peer = ""
        #: the ``timeout_write`` deadline while writing is paused (0: none);
        #: the session keeps its own deadlines (ping, closing handshake)
        self.deadline = 0.0
        self.deadline_kind = 0
        self.deadline_slot = 0
        self.writing_paused = False
        self._drain_waiter: asyncio.Future[None] | None = None
        self._closed = False
        self._opened_at = perf_counter()
        self._bytes_in = 0
        self._bytes_out = 0
        self._target = ""
        self._request: Request | None = None  # for the access log's header atoms

    @classmethod
    def take_over(
        cls,
        ctx: ServerContext,
        transport: asyncio.Transport,
        http: H1Connection,
        request: Request,
        handshake: HandshakeRequest,
        *,
        scheme: str,
        client: tuple[str, int] | None,
        server: tuple[str, int | None] | None,
        peer: str,
        leftover: bytes,
        tls: dict[str, Any] | None = None,
    ) -> WebSocketProtocol:
        self = cls(ctx, http)
        self.transport = transport
        self.peer = peer
        self._target = request.target.decode("ascii")
        self._request = request
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
        self.session = session = WebSocketSession(ctx, self, handshake, scope)
        if leftover:
            self._bytes_in += len(leftover)  # frames that arrived with the handshake
            session.receive(leftover)
        session.start()
        return self

    # --- asyncio callbacks -------------------------------------------------

    def data_received(self, data: bytes) -> None:
        self._bytes_in += len(data)
        self.session.receive(data)

    def eof_received(self) -> bool | None:
        self.session.receive_eof()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self._closed = True
        self.ctx.deadlines.drop(self)
        self.ctx.connections.discard(self)
        self.session.lost()
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
        if timeout:
            self.ctx.deadlines.arm(self, _WRITE_DEADLINE, self.ctx.clock + timeout)

    def resume_writing(self) -> None:
        self.writing_paused = False
        self.ctx.deadlines.clear(self)
        waiter = self._drain_waiter
        if waiter is not None:
            self._drain_waiter = None
            if not waiter.done():
                waiter.set_result(None)
        self.session.writable()

    # --- WebSocketLink (called by the session) --------------------------------

    def send_handshake(
        self,
        handshake: HandshakeRequest,
        subprotocol: str | None,
        extension_header: bytes | None,
        headers: Iterable[tuple[bytes, bytes]],
    ) -> None:
        assert handshake.key is not None
        fields = handshake_response_headers(
            accept_key(handshake.key),
            subprotocol,
            extension_header,
            headers,
            offered_subprotocols=handshake.subprotocols,
        )
        head = [status_line(101), self.ctx.server_line, self.ctx.date_line]
        head.extend(name + b": " + value + b"\r\n" for name, value in fields)
        head.append(b"\r\n")
        self.send(b"".join(head))

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
        self.send(head + data + (b"" if more_body else http.send_end()))
        if not more_body:
            self.close_link()

    def deny_body(self, body: bytes, more_body: bool) -> None:
        if self._closed:
            return
        data = self.http.send_data(body) if body else b""
        if not more_body:
            data += self.http.send_end()
        self.send(data)
        if not more_body:
            self.close_link()

    def send(self, data: bytes) -> None:
        if data and not self._closed:
            self._bytes_out += len(data)
            self.transport.write(data)

    def send_large(self, header: bytes, payload: bytes) -> None:
        if not self._closed:
            self._bytes_out += len(header) + len(payload)
            # no join: the payload is not copied (see write_pieces)
            write_pieces(self.transport, (header, payload))

    def close_link(self) -> None:
        if not self._closed:
            self._closed = True
            self.transport.close()  # the write deadline stays armed: close() waits for the buffer

    def abort_link(self) -> None:
        # a denial response cut short: what was written goes out, and its
        # framing (content-length or chunked) tells the client it is incomplete
        self.close_link()

    def pause_reading(self) -> None:
        if not self._closed:
            self.transport.pause_reading()

    def resume_reading(self) -> None:
        if not self._closed:
            self.transport.resume_reading()

    async def drain(self) -> None:
        if not self.writing_paused or self._closed:
            return
        waiter = self._drain_waiter
        if waiter is None:
            waiter = self._drain_waiter = self.ctx.loop.create_future()
        await waiter

    # --- connection API (ctx.connections) ---------------------------------------

    def on_deadline(self, kind: int) -> None:
        """``timeout_write`` passed with writing paused (also after close(), which
        waits for the write buffer to empty): drop the connection."""
        if self.writing_paused:
            error_logger.info("Closing WebSocket from %s: client stopped reading", self.peer)
            self._closed = True
            self.session.lost()
            self.transport.abort()

    #: an open WebSocket is never idle capacity (--limit-concurrency closes none)
    idle_keep_alive = False

    def close_idle(self) -> None:  # pragma: no cover - never called (idle_keep_alive is False)
        pass

    def shutdown(self) -> None:
        """Graceful shutdown: close 1001 (Going Away); the app gets its disconnect."""
        self.session.shutdown()

    def _log_session(self) -> None:
        observer = self.ctx.observer
        if observer is None:
            return
        cycle = self.session.cycle
        code = cycle.close_code if cycle.close_code is not None else 1006
        observer.websocket(
            self.peer, self._request, self._target, code, self._bytes_in, self._bytes_out, self._opened_at
        )


__all__ = ["WebSocketProtocol", "LocalProtocolError"]
