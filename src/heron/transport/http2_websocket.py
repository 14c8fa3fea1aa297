"""WebSocket over HTTP/2 (RFC 8441): an extended CONNECT stream of an
:class:`~heron.transport.http2.H2Protocol` runs the same
:class:`~heron.transport.ws_session.WebSocketSession` as an HTTP/1.1 upgrade,
with :class:`H2WebSocket` as its link.

:func:`open_websocket` checks the extended CONNECT (a bad one is answered with
its 4xx and runs no app), builds the ``websocket`` scope and the session; the
connection starts the session's app after the whole read is processed, as for
any request.
"""

from __future__ import annotations

from collections.abc import Iterable
from time import perf_counter
from typing import Any

from ..asgi.websocket import WebSocketCycle, websocket_scope
from ..protocol.errors import HandshakeError
from ..protocol.http2 import ErrorCodes, RequestReceived
from ..protocol.ws_handshake import HandshakeRequest, extended_connect_response_headers, validate_extended_connect
from .http2_stream import H2RequestView, H2Stream, H2StreamBase, H2StreamOwner
from .ws_session import WebSocketSession


def open_websocket(proto: H2StreamOwner, request: RequestReceived, started: list[Any]) -> None:
    """An extended CONNECT (``:protocol``) opened stream ``request.stream_id``:
    answer a bad handshake, or add the WebSocket session's cycle to ``started``."""
    ctx = proto.ctx
    sid = request.stream_id
    target = request.path + (b"?" + request.query if request.query else b"")
    pseudo = [
        (b":method", request.method),
        (b":protocol", request.protocol or b""),
        (b":scheme", request.scheme),
        (b":path", target),
        (b":authority", request.authority or b""),
    ]
    try:
        handshake = validate_extended_connect(pseudo + request.headers)
    except HandshakeError as exc:
        ctx.log_bad_request(proto.peer, str(exc), exc.status_code)
        stream = H2Stream(proto, sid, request.end_stream)
        proto.streams[sid] = stream
        stream.answer_without_app(exc.status_code, (str(exc) + "\n").encode(), exc.extra_headers)
        return
    ws_stream = H2WebSocket(proto, sid)
    if ctx.observer is not None:
        ws_stream._request = H2RequestView(b"GET", target, request.headers)
    ws_stream._start = perf_counter()
    proto.streams[sid] = ws_stream
    client, scheme = proto.client_and_scheme(request.headers)
    scope = websocket_scope(
        "2",
        "wss" if scheme == "https" else "ws",
        request.path,
        request.query,
        ctx.root_path,
        request.headers,
        client,
        proto.server,
        handshake.subprotocols,
        ctx.lifespan_state,
    )
    if proto.tls is not None:
        scope["extensions"]["tls"] = proto.tls
    ws_stream.session = session = WebSocketSession(ctx, ws_stream, handshake, scope)
    if request.end_stream:
        session.receive_eof()
    started.append(session.cycle)


class H2WebSocket(H2StreamBase):
    """A WebSocket in one stream (RFC 8441): the :class:`~heron.transport.ws_session.WebSocketLink`
    of its :class:`~heron.transport.ws_session.WebSocketSession`, which runs the
    frames, pings and the closing handshake exactly as over HTTP/1.1.

    Here: the 200 answer (or a denial response), DATA frames out, the end of
    the session (END_STREAM, the TCP FIN of RFC 8441, once the closing
    handshake is over, as the TCP close over HTTP/1.1; RST_STREAM NO_ERROR if
    the peer has not ended its side by then), and reading paused by withholding
    the stream's window credit.
    """

    __slots__ = ("session", "_paused", "_withheld", "_end_sent")

    def __init__(self, proto: H2StreamOwner, sid: int) -> None:
        super().__init__(proto, sid)
        self.session: WebSocketSession = None  # type: ignore[assignment]
        self._paused = False
        self._withheld = 0  # received bytes whose credit waits for accept or resume_reading
        self._end_sent = False

    @property
    def cycle(self) -> WebSocketCycle:
        return self.session.cycle

    @property
    def peer(self) -> str:
        return self.proto.peer

    # --- from the connection ---------------------------------------------------

    def feed(self, data: bytes) -> None:
        core = self.proto.core
        if self._finished:
            core.acknowledge(self.sid, len(data))
            return
        if self._paused or self.session.conn is None:
            self._withheld += len(data)
        else:
            core.acknowledge(self.sid, len(data))
        self.session.receive(data)

    def end_request(self) -> None:
        if not self._finished:
            self.session.receive_eof()

    def lost(self) -> None:
        if not self._finished:
            self._finished = True
            self.proto.streams.pop(self.sid, None)
            self.proto.core.stream_done(self.sid)
            self._log()
        self.session.lost()
        self.wake()

    def complete(self) -> None:
        if not self._finished:
            self._log()
            self.finish()

    def writable(self) -> None:
        self.wake()

    def wake(self) -> None:
        super().wake()
        if not self._finished and not self.writing_paused:
            self.session.writable()  # a Ping held back while the stream couldn't write

    def _log(self) -> None:
        proto = self.proto
        if proto.ctx.observer is not None:
            code = self.cycle.close_code if self.cycle.close_code is not None else 1006
            proto.log_access(self, code, 0)

    # --- WebSocketLink ---------------------------------------------------------------

    def send_handshake(
        self,
        handshake: HandshakeRequest,
        subprotocol: str | None,
        extension_header: bytes | None,
        headers: Iterable[tuple[bytes, bytes]],
    ) -> None:
        proto = self.proto
        if self._finished or proto.closed:
            return
        fields = extended_connect_response_headers(
            subprotocol, extension_header, headers, offered_subprotocols=handshake.subprotocols
        )
        proto.core.send_headers(self.sid, 200, fields[1:], False, proto.default_headers())
        if self._withheld and not self._paused:
            proto.core.acknowledge(self.sid, self._withheld)  # bytes that came before accept
            self._withheld = 0
        proto.schedule_flush()

    def deny(self, status: int, headers: Iterable[tuple[bytes, bytes]], body: bytes, more_body: bool) -> None:
        proto = self.proto
        if self._finished or proto.closed:
            return
        end = not more_body and not body
        proto.core.send_headers(self.sid, status, headers, end, proto.default_headers())
        if not end:
            proto.core.send_data(self.sid, body, not more_body)
        proto.schedule_flush()
        if not more_body and proto.core.pending(self.sid) == 0:
            self.complete()

    def deny_body(self, body: bytes, more_body: bool) -> None:
        if self._finished or self.proto.closed:
            return
        self._send(body, not more_body)
        if not more_body and self.proto.core.pending(self.sid) == 0:
            self.complete()

    def send(self, data: bytes) -> None:
        if data:
            self._send(data, False)

    def _send(self, data: bytes, end: bool) -> None:
        proto = self.proto
        if self._finished or proto.closed or self._end_sent:
            return
        if end:
            self._end_sent = True
        proto.core.send_data(self.sid, data, end)
        proto.schedule_flush()

    def send_large(self, header: bytes, payload: bytes) -> None:
        # two chunks for the core: the payload goes out in DATA frames without a join
        proto = self.proto
        if self._finished or proto.closed or self._end_sent:
            return
        proto.core.send_data(self.sid, header, False)
        proto.core.send_data(self.sid, payload, False)
        proto.schedule_flush()

    def close_link(self) -> None:
        """END_STREAM, then forget the stream (``finish`` adds RST_STREAM NO_ERROR
        if the peer has not ended its side)."""
        if self._finished or self.proto.closed:
            return
        self._send(b"", True)
        self.complete()

    def abort_link(self) -> None:
        if not self._finished:
            self.proto.core.reset(self.sid, ErrorCodes.CANCEL)
            self.proto.schedule_flush()
            self.lost()

    def pause_reading(self) -> None:
        self._paused = True

    def resume_reading(self) -> None:
        self._paused = False
        if self._withheld and self.session.conn is not None and not self._finished:
            self.proto.core.acknowledge(self.sid, self._withheld)
            self._withheld = 0
            self.proto.schedule_flush()
