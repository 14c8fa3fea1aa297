"""WebSocket over HTTP/3 (RFC 9220): an extended CONNECT stream of an
:class:`~heron.transport.http3.H3Protocol` runs the same
:class:`~heron.transport.ws_session.WebSocketSession` as an HTTP/1.1 upgrade or
an HTTP/2 stream (RFC 8441), with :class:`H3WebSocket` as its link.

RFC 9220 carries RFC 8441 over to HTTP/3: SETTINGS_ENABLE_CONNECT_PROTOCOL
(advertised while WebSocket is on), ``:method CONNECT`` with ``:protocol
websocket``, a 200 answer, and the WebSocket's bytes in DATA frames; the
stream's FIN stands for TCP's FIN, and an abort is a stream reset
H3_REQUEST_CANCELLED.

:func:`open_websocket` checks the extended CONNECT (a bad one is answered with
its 4xx and runs no app), builds the ``websocket`` scope and the session; the
connection starts the session's app once the whole datagram is processed, as
for any request.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from time import perf_counter

from aioquic.h3.connection import ErrorCode

from ..asgi.websocket import WebSocketCycle, websocket_scope
from ..protocol.errors import HandshakeError
from ..protocol.http2.fields import RequestFields, response_fields
from ..protocol.ws_handshake import HandshakeRequest, extended_connect_response_headers, validate_extended_connect
from .http3_quic import grant, unsent
from .http3_stream import SEND_HIGH_WATER, WRITE_DEADLINE, H3Carrier, H3RequestView, H3Stream, H3StreamOwner, drain
from .ws_session import WebSocketSession


def open_websocket(proto: H3StreamOwner, sid: int, request: RequestFields, end_stream: bool) -> H3Carrier | None:
    """An extended CONNECT opened stream ``sid``: the WebSocket's carrier (its
    session's app not started yet), or None when the handshake was refused."""
    ctx = proto.ctx
    target = request.target + (b"?" + request.query if request.query else b"")
    regular = list(request.regular)
    pseudo = [
        (b":method", request.method),
        (b":protocol", request.protocol or b""),
        (b":scheme", request.scheme),
        (b":path", target),
        (b":authority", request.authority or b""),
    ]
    try:
        handshake = validate_extended_connect(pseudo + regular)
    except HandshakeError as exc:
        ctx.log_bad_request(proto.peer, f"HTTP/3: {exc}", exc.status_code)
        stream = H3Stream(proto, sid, end_stream)
        proto.streams[sid] = stream
        stream.answer_without_app(exc.status_code, (str(exc) + "\n").encode(), exc.extra_headers)
        return None
    ws = H3WebSocket(proto, sid)
    if ctx.observer is not None:
        ws.request = H3RequestView(b"GET", target, regular)
        ws.started = perf_counter()
    proto.streams[sid] = ws
    client, scheme = proto.client, "https"
    if ctx.proxy is not None and request.forwarded and ctx.proxy.trusts_peer(client):
        client, scheme = ctx.proxy.resolve(regular, client, scheme)
    scope = websocket_scope(
        "3",
        "wss" if scheme == "https" else "ws",
        request.target,
        request.query,
        ctx.root_path,
        regular,
        client,
        proto.server,
        handshake.subprotocols,
        ctx.lifespan_state,
    )
    if proto.tls is not None:
        scope["extensions"]["tls"] = proto.tls
    ws.session = WebSocketSession(ctx, ws, handshake, scope)
    if end_stream:
        ws.end_request()
    return ws


class H3WebSocket:
    """A WebSocket in one request stream (RFC 9220): the
    :class:`~heron.transport.ws_session.WebSocketLink` of its session, and a
    :class:`~heron.transport.http3_stream.H3Carrier` of its connection.

    Reading pauses by withholding the stream's flow-control credit: what
    arrives while paused (or before the app accepts) is counted ``unread``,
    and the client may send at most one stream window beyond it. ``send()``
    waits while :data:`~heron.transport.http3_stream.SEND_HIGH_WATER` bytes are
    unacknowledged, within ``--timeout-write`` (then the stream is reset).
    """

    __slots__ = (
        "proto", "sid", "session", "request", "started", "finished", "unread", "_paused", "_end_sent", "_eof",
        "_drain_waiter", "deadline", "deadline_kind", "deadline_slot",
    )  # fmt: skip

    wants_writable = True  # (a Pong held back while the stream could not write)

    def __init__(self, proto: H3StreamOwner, sid: int) -> None:
        self.proto = proto
        self.sid = sid
        self.session: WebSocketSession = None  # type: ignore[assignment]  # (set right after, by open_websocket)
        self.request: H3RequestView | None = None  # kept only while access is observed
        self.started = 0.0
        self.finished = False
        self.unread = 0  # received bytes whose credit is withheld (paused, or not accepted yet)
        self._paused = False
        self._end_sent = False
        self._eof = False  # the client ended its side (FIN)
        self._drain_waiter: asyncio.Future[None] | None = None
        self.deadline = 0.0
        self.deadline_kind = 0
        self.deadline_slot = 0

    @property
    def cycle(self) -> WebSocketCycle:
        return self.session.cycle

    @property
    def peer(self) -> str:
        return self.proto.peer

    # --- from the connection (H3Carrier) -------------------------------------------------

    def start(self) -> None:
        self.session.start()

    def feed(self, data: bytes) -> None:
        if self.finished:
            return
        if self._paused or self.session.conn is None:
            self.unread += len(data)
            self.proto.unread += len(data)
        else:
            self._grant()
        self.session.receive(data)

    def end_request(self) -> None:
        self._eof = True
        if not self.finished:
            self.session.receive_eof()

    def lost(self) -> None:
        """The client reset the stream (or stopped reading it), or the connection is gone."""
        self._finish()
        self.session.lost()
        self.wake()

    def wake(self) -> None:
        waiter = self._drain_waiter
        if waiter is not None:
            self._drain_waiter = None
            if not waiter.done():
                waiter.set_result(None)
        if not self.finished and not self.writing_paused:
            self.session.writable()

    def on_deadline(self, kind: int) -> None:
        if kind == WRITE_DEADLINE and not self.finished:  # the client acknowledges nothing
            self.session.abort()

    # --- WebSocketLink ---------------------------------------------------------------------

    @property
    def writing_paused(self) -> bool:
        return not self.finished and unsent(self.proto.quic, self.sid) >= SEND_HIGH_WATER

    async def drain(self) -> None:
        await drain(self)

    def send_handshake(
        self,
        handshake: HandshakeRequest,
        subprotocol: str | None,
        extension_header: bytes | None,
        headers: Iterable[tuple[bytes, bytes]],
    ) -> None:
        proto = self.proto
        if self.finished or proto.closed or proto.h3 is None:
            return
        fields = extended_connect_response_headers(
            subprotocol, extension_header, headers, offered_subprotocols=handshake.subprotocols
        )
        proto.h3.send_headers(self.sid, [*fields, *proto.default_headers()], False)
        if self.unread and not self._paused:
            self._release()  # bytes that came before accept
        proto.schedule_transmit()

    def deny(self, status: int, headers: Iterable[tuple[bytes, bytes]], body: bytes, more_body: bool) -> None:
        proto = self.proto
        if self.finished or proto.closed or proto.h3 is None:
            return
        fields, _ = response_fields(status, headers)
        fields.extend(proto.default_headers())
        end = not more_body and not body
        proto.h3.send_headers(self.sid, fields, end)
        if end:
            self._end_sent = True
        else:
            self._send(body, not more_body)
        proto.schedule_transmit()
        if not more_body:
            self._done()

    def deny_body(self, body: bytes, more_body: bool) -> None:
        if self.finished or self.proto.closed:
            return
        self._send(body, not more_body)
        if not more_body:
            self._done()

    def send(self, data: bytes) -> None:
        if data:
            self._send(data, False)

    def send_large(self, header: bytes, payload: bytes) -> None:
        self._send(header, False)
        self._send(payload, False)

    def _send(self, data: bytes, end: bool) -> None:
        proto = self.proto
        if self.finished or proto.closed or proto.h3 is None or self._end_sent:
            return
        if end:
            self._end_sent = True
        proto.h3.send_data(self.sid, data, end)
        proto.schedule_transmit()

    def close_link(self) -> None:
        """FIN (TCP's FIN of RFC 6455), and STOP_SENDING H3_NO_ERROR if the client has
        not ended its side: the stream is done."""
        if self.finished or self.proto.closed:
            return
        self._send(b"", True)
        self._done()

    def abort_link(self) -> None:
        """Reset both directions (H3_REQUEST_CANCELLED, RFC 9220 3)."""
        if self.finished:
            return
        quic = self.proto.quic
        try:
            quic.reset_stream(self.sid, ErrorCode.H3_REQUEST_CANCELLED)
            quic.stop_stream(self.sid, ErrorCode.H3_REQUEST_CANCELLED)
        except ValueError:
            pass  # (aioquic discarded the stream already)
        self.proto.schedule_transmit()
        self.lost()

    def pause_reading(self) -> None:
        self._paused = True

    def resume_reading(self) -> None:
        self._paused = False
        if self.unread and self.session.conn is not None and not self.finished:
            self._release()
            self.proto.schedule_transmit()

    # --- flow control and the end ------------------------------------------------------------

    def _grant(self) -> None:
        proto = self.proto
        if grant(proto.quic, self.sid, self.unread, proto.ctx.config.http2_initial_window_size):
            proto.schedule_transmit()

    def _release(self) -> None:
        """The withheld bytes are taken: their credit goes back to the client."""
        proto = self.proto
        proto.unread -= self.unread
        self.unread = 0
        self._grant()
        proto.body_read()

    def _done(self) -> None:
        """Our side is complete: stop the client's (H3_NO_ERROR, RFC 9114 4.1) if it is
        still sending, and forget the stream."""
        if self.finished:
            return
        if not self._eof:
            try:
                self.proto.quic.stop_stream(self.sid, ErrorCode.H3_NO_ERROR)
            except ValueError:
                pass
        self._finish()

    def _finish(self) -> None:
        if self.finished:
            return
        self.finished = True
        proto = self.proto
        ctx = proto.ctx
        if self.deadline:
            ctx.deadlines.drop(self)
        proto.unread -= self.unread
        self.unread = 0
        proto.streams.pop(self.sid, None)
        observer = ctx.observer
        request = self.request
        if observer is not None and request is not None:
            self.request = None
            code = self.cycle.close_code if self.cycle.close_code is not None else 1006
            observer.http(proto.peer, request, code, 0, self.started, None)
        proto.schedule_transmit()


__all__ = ["H3WebSocket", "open_websocket"]
