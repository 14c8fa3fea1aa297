"""HTTP/2 over an asyncio transport: moves bytes between the socket, the
sans-IO :class:`~heron.protocol.http2.H2Core` and one ASGI cycle per stream
(:class:`~heron.asgi.http.HTTPCycle`, or for an RFC 8441 WebSocket a
:class:`~heron.transport.ws_session.WebSocketSession`, the same session driver
as over HTTP/1.1, with :class:`H2WebSocket` as its link).

Entry points: :class:`H2Protocol` is a protocol factory taking the
:class:`ServerContext` (TLS with ALPN "h2"); :meth:`H2Protocol.take_over`
adopts a connection from :class:`~heron.transport.http1.H1Protocol` (h2c
prior knowledge, or ``Upgrade: h2c``, see :mod:`heron.transport.h2c`).

Flow control: request body credit goes back to the client only as the app
consumes it (``HTTPCycle(on_body_consumed=...)``); ``send()`` waits while the
stream's data waits for the client's window, or while the socket's write
buffer is full. While the write buffer is full the connection also stops
reading (a peer that sends PINGs or SETTINGS without reading our ACKs stalls
itself). Deadlines (see :mod:`heron.transport.context`): ``timeout_write``
for a client that reads nothing, and for a stream (or the whole connection)
whose window stays at 0; ``timeout_keep_alive`` for a connection without
streams.

Application tasks for the requests of one read are started after the whole
read is processed, so a stream opened and reset in the same read (rapid
reset) never starts the app.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable
from time import perf_counter
from typing import TYPE_CHECKING, Any

from ..asgi.budget import ReadBudget
from ..asgi.http import ERROR_BODIES, HTTPCycle, http_scope
from ..asgi.proxy import ProxyTrust
from ..asgi.websocket import WebSocketCycle, websocket_scope
from ..protocol.errors import HandshakeError, LocalProtocolError
from ..protocol.http2 import (
    ConnectionEnded,
    DataReceived,
    ErrorCodes,
    H2Core,
    H2Limits,
    RequestReceived,
    StreamEnded,
    StreamReset,
    StreamWritable,
)
from ..protocol.ws_handshake import HandshakeRequest, extended_connect_response_headers, validate_extended_connect
from ..tls import tls_extension
from .context import ServerContext, connection_addresses, error_logger, format_peer, write_pieces
from .ws_session import WebSocketSession

if TYPE_CHECKING:
    from ..protocol.http1 import Request

_METHODS = {m.encode(): m for m in ("GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "TRACE")}
_TEXT_HEADERS = [(b"content-type", b"text/plain; charset=utf-8")]
_REASONS = {408: b"Request Timeout", 413: b"Content Too Large"}
_EXTENSIONS = ("http.response.trailers", "http.response.early_hint", "http.response.pathsend")
# Push is announced on every client-initiated stream (a pushed stream can't push);
# a push message is ignored when the client disabled push (SETTINGS_ENABLE_PUSH = 0).
_EXTENSIONS_PUSH = _EXTENSIONS + ("http.response.push",)

_NO_DEADLINE = 0
_IDLE_DEADLINE = 1
_WRITE_DEADLINE = 2
_WINDOW_DEADLINE = 3

# why reading is paused (bits of H2Protocol._reading_paused_by)
_PAUSED_BY_WRITING = 1  # the socket's write buffer is full
_PAUSED_BY_BUDGET = 2  # the streams' unread bodies cost too much (see H2Protocol.budget)
_PAUSED_BY_TURN = 4  # frames of the last read wait for the next turn (H2Core.input_pending)


def limits_from_config(config: Any) -> H2Limits:
    return H2Limits(
        max_concurrent_streams=config.http2_max_concurrent_streams,
        max_header_list_size=config.http2_max_header_list_size,
        initial_window_size=config.http2_initial_window_size,
        max_resets=config.http2_max_resets,
        max_control_frames=config.http2_max_control_frames,
        max_empty_frames=config.http2_max_empty_frames,
        enable_connect_protocol=config.ws != "none",
    )


class _Stream:
    """State shared by HTTP and WebSocket streams: flow control and drain."""

    __slots__ = ("proto", "sid", "_drain_waiter", "_finished", "_unacked", "_request", "_start")

    def __init__(self, proto: H2Protocol, sid: int) -> None:
        self.proto = proto
        self.sid = sid
        self._drain_waiter: asyncio.Future[None] | None = None
        self._finished = False
        self._unacked = 0  # body bytes received but not consumed
        self._request: _RequestView | None = None  # kept only while access is observed
        self._start = 0.0

    @property
    def writing_paused(self) -> bool:
        proto = self.proto
        return not self._finished and (proto.writing_paused or proto.core.pending(self.sid) > 0)

    @writing_paused.setter
    def writing_paused(self, value: bool) -> None:  # pragma: no cover - derived, never set
        raise AttributeError("writing_paused is derived from the connection and the stream's window")

    async def drain(self) -> None:
        while self.writing_paused and not self.proto.closed:
            waiter = self._drain_waiter
            if waiter is None:
                waiter = self._drain_waiter = self.proto.ctx.loop.create_future()
            await waiter

    def wake(self) -> None:
        waiter = self._drain_waiter
        if waiter is not None:
            self._drain_waiter = None
            if not waiter.done():
                waiter.set_result(None)

    def feed(self, data: bytes) -> None:
        raise NotImplementedError

    def end_request(self) -> None:
        raise NotImplementedError

    def lost(self) -> None:
        """The stream was reset or the connection is gone."""
        raise NotImplementedError

    def finish(self) -> None:
        """Our side is done: give back unconsumed credit, forget the stream."""
        if self._finished:
            return
        self._finished = True
        proto = self.proto
        proto.core.finish_stream(self.sid, self._unacked)
        self._unacked = 0
        proto.streams.pop(self.sid, None)
        if self._drain_waiter is not None:
            self.wake()
        proto.stream_finished()


class H2Stream(_Stream):
    """One request/response stream: the :class:`~heron.asgi.http.HTTPStream` of its cycle."""

    __slots__ = ("cycle", "_head_sent", "_request_complete", "budget", "deadline")

    #: no zero-copy file sending on HTTP/2 (pathsend reads the file in a thread)
    send_file: Callable[[int, int, int], Awaitable[None]] | None = None

    def __init__(self, proto: H2Protocol, sid: int, request_complete: bool) -> None:
        # _Stream.__init__, inlined (one of these per request)
        self.proto = proto
        self.sid = sid
        self._drain_waiter: asyncio.Future[None] | None = None
        self._finished = False
        self._unacked = 0
        self._request: _RequestView | None = None  # kept only while access is observed
        self._start = 0.0
        self.cycle: HTTPCycle = None  # type: ignore[assignment]
        self._head_sent = False
        self._request_complete = request_complete
        #: the connection's: every stream's unread body is charged to it
        self.budget = proto.budget
        #: timeout_request_body while the app waits for body (the stream is in ctx.timers then)
        self.deadline = 0.0

    # --- from the connection ---------------------------------------------------

    def feed(self, data: bytes) -> None:
        if self._finished:
            self.proto.core.acknowledge(self.sid, len(data))
            return
        self._unacked += len(data)
        self.cycle.feed_body(data)

    def end_request(self) -> None:
        if self._request_complete:
            return  # END_STREAM on the HEADERS: the cycle knows already
        self._request_complete = True
        self.cycle.end_body()

    def lost(self) -> None:
        if not self._finished:
            self._finished = True
            self.proto.streams.pop(self.sid, None)
            self.proto.core.stream_done(self.sid)
            self.proto.log_access(self, self.cycle.status, self.cycle.bytes_sent)
        if self.deadline:
            self.wait_for_body(False)
        self.cycle.disconnect()
        self.wake()

    def finish(self) -> None:
        if self.deadline:
            self.wait_for_body(False)
        super().finish()

    def body_consumed(self, size: int) -> None:
        if not self._finished and size:
            self._unacked -= size
            self.proto.core.acknowledge(self.sid, size)
            self.proto.schedule_flush()

    # --- HTTPStream ------------------------------------------------------------

    def start_response(self, status: int, headers: Iterable[tuple[bytes, bytes]], body: bytes, more_body: bool) -> None:
        proto = self.proto
        if self._finished or proto.closed:
            return
        core = proto.core
        sid = self.sid
        end = not more_body and not body
        core.send_headers(sid, status, headers, end, proto.default_headers())
        self._head_sent = True
        if not end:
            core.send_data(sid, body, not more_body)
        if proto._flush_handle is None:
            proto.schedule_flush()
        if not more_body and not core.pending(sid):
            self.complete()

    def send_body(self, body: bytes, more_body: bool) -> None:
        proto = self.proto
        if self._finished or proto.closed:
            return
        proto.core.send_data(self.sid, body, not more_body)
        proto.schedule_flush()
        if not more_body:
            self._maybe_complete()

    def send_trailers(self, headers: list[tuple[bytes, bytes]]) -> None:
        proto = self.proto
        if self._finished or proto.closed:
            return
        proto.core.send_trailers(self.sid, headers)
        proto.schedule_flush()
        self._maybe_complete()

    def send_early_hint(self, links: list[bytes]) -> None:
        proto = self.proto
        if self._finished or proto.closed or self._head_sent:
            return
        proto.core.send_informational(self.sid, 103, [(b"link", link) for link in links])
        proto.schedule_flush()

    def push(self, path: str, headers: list[tuple[bytes, bytes]]) -> None:
        proto = self.proto
        if self._finished or proto.closed:
            return
        try:
            raw = path.encode("ascii")
        except UnicodeEncodeError:
            raise LocalProtocolError(f"invalid push path {path!r:.60}") from None
        promised = proto.core.push(self.sid, raw, headers)
        if promised is not None:
            proto.start_pushed(promised, raw, self.cycle.scope, headers)

    def send_server_error(self, status: int = 500) -> None:
        if self._finished or self.proto.closed:
            return
        if self._head_sent:
            self.abort()
            return
        body = ERROR_BODIES[status]
        self.start_response(status, _TEXT_HEADERS + [(b"content-length", b"%d" % len(body))], body, False)

    def abort(self) -> None:
        proto = self.proto
        if not self._finished:
            proto.core.reset(self.sid, ErrorCodes.INTERNAL_ERROR)
            proto.schedule_flush()
            self.lost()

    def send_continue(self) -> None:
        pass  # HTTP/2 clients don't wait for 100-continue before sending (RFC 9113 8.1)

    def refuse(self, status: int) -> None:
        """Answer ``status``; finishing the stream then resets its request side
        (RST_STREAM NO_ERROR: stop sending, RFC 9113 8.1)."""
        if self._finished or self.proto.closed or self._head_sent:
            return
        body = b"%d %s\n" % (status, _REASONS.get(status, b""))
        self.start_response(status, _TEXT_HEADERS + [(b"content-length", b"%d" % len(body))], body, False)

    def wait_for_body(self, waiting: bool) -> None:
        proto = self.proto
        timers = proto.ctx.timers
        if waiting:
            timeout = proto.ctx.config.timeout_request_body
            if timeout and not self._finished:
                self.deadline = proto.ctx.clock + timeout
                timers.add(self)
        elif self.deadline:
            self.deadline = 0.0
            timers.discard(self)

    def on_deadline(self) -> None:
        """timeout_request_body passed with the app waiting for body bytes."""
        self.deadline = 0.0
        self.proto.ctx.timers.discard(self)
        if not self._finished:
            self.proto.ctx.log_bad_request(self.proto.peer, "HTTP/2 request body not received in time", 408)
            self.cycle.refuse_body(408)

    # --- completion -------------------------------------------------------------

    def _maybe_complete(self) -> None:
        if self.proto.core.pending(self.sid) == 0:
            self.complete()

    def complete(self) -> None:
        """Everything of the response was handed to the connection."""
        if self._finished:
            return
        if self._request is not None:
            self.proto.log_access(self, self.cycle.status, self.cycle.bytes_sent)
        self.finish()

    def writable(self) -> None:
        if self.cycle.response_complete:
            self.complete()
        self.wake()


class H2WebSocket(_Stream):
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

    def __init__(self, proto: H2Protocol, sid: int) -> None:
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


class H2Protocol(asyncio.Protocol):
    """HTTP/2 server connection. ``H2Protocol(ctx)`` is a protocol factory (TLS + ALPN h2)."""

    def __init__(self, ctx: ServerContext) -> None:
        self.ctx = ctx
        self.core = H2Core(limits_from_config(ctx.config), clock=ctx.loop.time)
        self.transport: asyncio.Transport = None  # type: ignore[assignment]
        self.streams: dict[int, _Stream] = {}
        self.client: tuple[str, int] | None = None
        self.server: tuple[str, int | None] | None = None
        self.scheme = "http"
        self.tls: dict[str, Any] | None = None  # the ASGI tls extension, once per TLS connection
        self.peer = ""
        self.deadline = 0.0
        self.deadline_kind = _NO_DEADLINE
        self.writing_paused = False
        self.closed = False
        self._flush_handle: asyncio.Handle | None = None
        self._deadline_stale = False
        self._reading_paused_by = 0  # bits: _PAUSED_BY_WRITING, _PAUSED_BY_BUDGET, _PAUSED_BY_TURN
        self._turn_pending = False
        #: what the request bodies of all streams cost while they wait for their apps.
        #: The windows bound the payload (credit returns only as apps read), so this
        #: pauses the socket only if per-piece overhead ever made that bound too loose.
        self.budget = ReadBudget(
            2 * self.core.limits.connection_window_size,
            lambda: self._pause_reading(_PAUSED_BY_BUDGET),
            lambda: self._resume_reading(_PAUSED_BY_BUDGET),
        )
        self._date_line = b"?"
        self._defaults: list[tuple[bytes, bytes]] = []
        self._upgrade: tuple[bytes, Request, bytes] | None = None
        self.proxy: ProxyTrust | None = None  # set when the peer is a trusted proxy (--proxy-headers)

    # --- entry points -----------------------------------------------------------

    @classmethod
    def take_over(
        cls,
        ctx: ServerContext,
        transport: asyncio.Transport,
        *,
        scheme: str,
        client: tuple[str, int] | None,
        server: tuple[str, int | None] | None,
        peer: str,
        data: bytes = b"",
        upgrade: tuple[bytes, Request, bytes] | None = None,
    ) -> H2Protocol:
        """Adopt a connection from the HTTP/1.1 protocol: ``data`` is what was read
        already (starting with the preface); ``upgrade`` is (HTTP2-Settings value,
        request, body chunks) for ``Upgrade: h2c``, answered with 101 first."""
        self = cls(ctx)
        self.transport = transport
        self.scheme = scheme
        self.client = client
        self.server = server
        self.peer = peer
        self._upgrade = upgrade
        transport.set_protocol(self)
        self._start()
        if data:
            self.data_received(data)
        return self

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.client, self.server, self.peer = connection_addresses(transport)
        ssl_object = transport.get_extra_info("ssl_object")
        if ssl_object is not None:
            self.scheme = "https"
            self.tls = tls_extension(ssl_object)
        self._start()

    def _client_and_scheme(self, headers: list[tuple[bytes, bytes]]) -> tuple[tuple[str, int] | None, str]:
        """A request's ``client`` and ``scheme``: the connection's, or what the
        trusted proxy in front reports (--proxy-headers)."""
        if self.proxy is None:
            return self.client, self.scheme
        return self.proxy.resolve(headers, self.client, self.scheme)

    def _start(self) -> None:
        ctx = self.ctx
        ctx.connections.add(self)
        if ctx.proxy is not None and ctx.proxy.trusts_peer(self.client):
            self.proxy = ctx.proxy
        core = self.core
        upgrade = self._upgrade
        if upgrade is not None:
            settings, request, body = upgrade
            self._upgrade = None
            self.transport.write(b"HTTP/1.1 101 Switching Protocols\r\nconnection: Upgrade\r\nupgrade: h2c\r\n\r\n")
            core.initiate(settings)
            self._serve_upgraded(request, body)
        else:
            core.initiate()
        if ctx.shutting_down:
            self.shutdown()
        self.flush()
        self._refresh_deadline()

    # --- asyncio callbacks -------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        if self.closed:
            return
        events = self.core.receive_data(data)
        started: list[Any] = []
        for event in events:
            kind = event.__class__
            if kind is RequestReceived:
                cycle = self._on_request(event)  # type: ignore[arg-type]
                if cycle is not None:
                    started.append(cycle)
            elif kind is DataReceived:
                stream = self.streams.get(event.stream_id)  # type: ignore[attr-defined]
                if stream is not None:
                    stream.feed(event.data)  # type: ignore[attr-defined]
                else:
                    self.core.acknowledge(event.stream_id, len(event.data))  # type: ignore[attr-defined]
            elif kind is StreamEnded:
                stream = self.streams.get(event.stream_id)  # type: ignore[attr-defined]
                if stream is not None:
                    stream.end_request()
            elif kind is StreamReset:
                stream = self.streams.get(event.stream_id)  # type: ignore[attr-defined]
                if stream is not None:
                    stream.lost()
            elif kind is StreamWritable:
                stream = self.streams.get(event.stream_id)  # type: ignore[attr-defined]
                if stream is not None:
                    stream.writable()  # type: ignore[attr-defined]
            elif kind is ConnectionEnded:
                if event.error_code:  # type: ignore[attr-defined]
                    if not event.remote:  # type: ignore[attr-defined]
                        self.ctx.log_bad_request(self.peer, f"HTTP/2: {event.reason}", 400)  # type: ignore[attr-defined]
                    self._terminate()
                    return
                self.stream_finished()  # peer GOAWAY NO_ERROR: close once idle
        ctx = self.ctx
        for cycle in started:
            if cycle.task is None and not self.closed:
                stream = cycle.stream
                if type(stream) is WebSocketSession:
                    stream.start()  # not when its stream is gone already
                elif not stream._finished:
                    ctx.start_cycle(cycle)
        core = self.core
        if core.closed:
            self._terminate()
            return
        if core.has_output:
            # replies (ACKs, WINDOW_UPDATEs...) go out with the responses of this read: one write
            self.schedule_flush()
        if core.input_pending:
            # the rest of this read after other connections have had their turn
            self._pause_reading(_PAUSED_BY_TURN)
            if not self._turn_pending:
                self._turn_pending = True
                ctx.loop.call_soon(self._next_turn)
        self._refresh_deadline()

    def _next_turn(self) -> None:
        self._turn_pending = False
        if self.closed:
            return
        self.data_received(b"")
        if not self._turn_pending:
            self._resume_reading(_PAUSED_BY_TURN)

    def _pause_reading(self, reason: int) -> None:
        if not self._reading_paused_by and not self.closed:
            self.transport.pause_reading()
        self._reading_paused_by |= reason

    def _resume_reading(self, reason: int) -> None:
        was_paused = self._reading_paused_by
        self._reading_paused_by &= ~reason
        if was_paused and not self._reading_paused_by and not self.closed:
            self.transport.resume_reading()

    def eof_received(self) -> bool | None:
        self._terminate()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.deadline = 0.0
        self.ctx.connections.discard(self)
        for stream in list(self.streams.values()):
            stream.lost()
        self.streams.clear()
        if self._flush_handle is not None:
            self._flush_handle.cancel()
            self._flush_handle = None

    def pause_writing(self) -> None:
        self.writing_paused = True
        # A peer that doesn't read gets nothing more from us: stop reading too
        # (a PING or SETTINGS flood then stalls the flooder, not our memory).
        self._pause_reading(_PAUSED_BY_WRITING)
        self._refresh_deadline()

    def resume_writing(self) -> None:
        self.writing_paused = False
        self._resume_reading(_PAUSED_BY_WRITING)
        for stream in list(self.streams.values()):
            stream.wake()
        self._refresh_deadline()

    # --- requests ----------------------------------------------------------------

    def _on_request(self, request: RequestReceived) -> Any:
        ctx = self.ctx
        sid = request.stream_id
        method = _METHODS.get(request.method) or request.method.decode("ascii")
        if request.protocol is not None:
            return self._on_extended_connect(request)
        if method == "CONNECT":
            stream = H2Stream(self, sid, request.end_stream)
            self.streams[sid] = stream
            stream.cycle = HTTPCycle({}, stream, request.end_stream)
            self._simple(stream, 501, b"Not Implemented\n")
            return None
        stream = H2Stream(self, sid, request.end_stream)
        self.streams[sid] = stream
        if ctx.observer is not None:
            stream._start = perf_counter()
            target = request.path + (b"?" + request.query if request.query else b"")
            stream._request = _RequestView(request.method, target, request.headers)
        if ctx.limit_concurrency is not None and ctx.over_capacity(self):
            stream.cycle = HTTPCycle({}, stream, request.end_stream)
            self._simple(stream, 503, b"Service Unavailable\n")
            return None
        body_limit = ctx.limit_request_body
        if body_limit and request.content_length is not None and request.content_length > body_limit:
            ctx.log_bad_request(
                self.peer, f"request body of {request.content_length} bytes over --limit-request-body", 413
            )
            stream.cycle = HTTPCycle({}, stream, request.end_stream)
            self._simple(stream, 413, b"Content Too Large\n")
            return None
        client, scheme = self._client_and_scheme(request.headers)
        scope = http_scope(
            method,
            "2",
            scheme,
            request.path,
            request.query,
            ctx.root_path,
            request.headers,
            client,
            self.server,
            ctx.lifespan_state,
            {"tls": self.tls} if self.tls is not None else {},
        )
        cycle = HTTPCycle(
            scope,
            stream,
            request.end_stream,
            extensions=_EXTENSIONS_PUSH,
            body_limit=body_limit,
            on_body_consumed=None if request.end_stream else stream.body_consumed,
        )
        stream.cycle = cycle
        return cycle

    def _simple(self, stream: H2Stream, status: int, body: bytes) -> None:
        stream.cycle.status = status
        stream.start_response(status, _TEXT_HEADERS + [(b"content-length", b"%d" % len(body))], body, False)

    def _on_extended_connect(self, request: RequestReceived) -> Any:
        ctx = self.ctx
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
            ctx.log_bad_request(self.peer, str(exc), exc.status_code)
            stream = H2Stream(self, sid, request.end_stream)
            self.streams[sid] = stream
            stream.cycle = HTTPCycle({}, stream, request.end_stream)
            body = (str(exc) + "\n").encode()
            stream.cycle.status = exc.status_code
            stream.start_response(
                exc.status_code,
                _TEXT_HEADERS + [(b"content-length", b"%d" % len(body))] + exc.extra_headers,
                body,
                False,
            )
            return None
        ws_stream = H2WebSocket(self, sid)
        if ctx.observer is not None:
            ws_stream._request = _RequestView(b"GET", target, request.headers)
        ws_stream._start = perf_counter()
        self.streams[sid] = ws_stream
        client, scheme = self._client_and_scheme(request.headers)
        scope = websocket_scope(
            "2",
            "wss" if scheme == "https" else "ws",
            request.path,
            request.query,
            ctx.root_path,
            request.headers,
            client,
            self.server,
            handshake.subprotocols,
            ctx.lifespan_state,
        )
        if self.tls is not None:
            scope["extensions"]["tls"] = self.tls
        ws_stream.session = session = WebSocketSession(ctx, ws_stream, handshake, scope)
        if request.end_stream:
            session.receive_eof()
        return session.cycle

    def _serve_upgraded(self, request: Request, body: bytes) -> None:
        """Stream 1 is the HTTP/1.1 request that asked for ``Upgrade: h2c`` (complete)."""
        ctx = self.ctx
        method = _METHODS.get(request.method) or request.method.decode("ascii")
        authority = b""
        for name, value in request.headers:
            if name == b"host":
                authority = value
        self.core.adopt_upgraded_request(request.method, self.scheme.encode(), authority)
        stream = H2Stream(self, 1, True)
        self.streams[1] = stream
        if ctx.observer is not None:
            stream._start = perf_counter()
            stream._request = _RequestView(request.method, request.target, request.headers)
        headers = [
            (name, value)
            for name, value in request.headers
            if name not in (b"connection", b"upgrade", b"http2-settings", b"keep-alive", b"te")
        ]
        client, scheme = self._client_and_scheme(headers)
        scope = http_scope(
            method,
            "2",
            scheme,
            request.path,
            request.query,
            ctx.root_path,
            headers,
            client,
            self.server,
            ctx.lifespan_state,
            {},
        )
        cycle = HTTPCycle(
            scope,
            stream,
            True,
            extensions=_EXTENSIONS_PUSH,
        )
        stream.cycle = cycle
        if body:
            cycle.feed_body(body)
        ctx.start_cycle(cycle)

    def start_pushed(self, sid: int, path: bytes, parent: Any, headers: list[tuple[bytes, bytes]]) -> None:
        """Run the app for a pushed GET (its own scope, like a request)."""
        ctx = self.ctx
        target, _, query = path.partition(b"?")
        stream = H2Stream(self, sid, True)
        self.streams[sid] = stream
        if ctx.observer is not None:
            stream._start = perf_counter()
            stream._request = _RequestView(b"GET", path, list(headers))
        request_headers = [h for h in parent["headers"] if h[0] == b"host"]
        request_headers.extend((name.lower(), value) for name, value in headers if name.lower() != b"host")
        # a pushed response is for the same user as the request that pushed it
        scope = http_scope(
            "GET",
            "2",
            parent.get("scheme", self.scheme),
            target,
            query,
            ctx.root_path,
            request_headers,
            parent.get("client", self.client),
            self.server,
            ctx.lifespan_state,
            {"tls": self.tls} if self.tls is not None else {},
        )
        cycle = HTTPCycle(scope, stream, True, extensions=_EXTENSIONS)
        stream.cycle = cycle
        ctx.start_cycle(cycle)

    # --- output --------------------------------------------------------------------

    def default_headers(self) -> list[tuple[bytes, bytes]]:
        """server/date/--header fields, parsed from the context's cached lines."""
        ctx = self.ctx
        if ctx.date_line is not self._date_line:
            self._date_line = ctx.date_line
            lines = ctx.server_line + ctx.date_line + ctx.extra_lines
            defaults = []
            for line in lines.split(b"\r\n"):
                if line:
                    name, _, value = line.partition(b":")
                    defaults.append((name.strip().lower(), value.strip()))
            self._defaults = defaults
        return self._defaults

    def schedule_flush(self) -> None:
        """Write what the core queued once the current callbacks (the app tasks of
        this read) have run: one ``transport.write`` for all of them."""
        if self._flush_handle is None and not self.closed:
            self._flush_handle = self.ctx.loop.call_soon(self._flush_soon)

    def _flush_soon(self) -> None:
        self._flush_handle = None
        self.flush()

    def flush(self) -> None:
        handle = self._flush_handle
        if handle is not None:
            self._flush_handle = None
            handle.cancel()
        if self.closed:
            return
        core = self.core
        large = core.large_output
        out = core.take_output()
        if out:
            transport = self.transport
            if len(out) == 1:
                transport.write(out[0])
            elif large:
                write_pieces(transport, out)  # big bodies: no copy into one buffer
            else:
                transport.write(b"".join(out))
            if not transport.get_write_buffer_size():
                core.output_flushed()
        if self._deadline_stale or core.blocked or self.deadline_kind == _WINDOW_DEADLINE:
            self._deadline_stale = False
            self._refresh_deadline()

    # --- lifecycle -------------------------------------------------------------------

    def stream_finished(self) -> None:
        if not self.streams and self.core.going_away and not self.closed:
            self.flush()
            self._close()
        elif not self.closed:
            if self._flush_handle is not None:
                self._deadline_stale = True  # refreshed by the flush, once for all the streams it ends
            else:
                self._refresh_deadline()

    def _refresh_deadline(self) -> None:
        if self.closed:
            return
        if not self.writing_paused and not self.core.blocked:
            # the usual cases (twice per request): streams in flight, or none
            if self.streams:
                if self.deadline_kind != _NO_DEADLINE:
                    self.deadline = 0.0
                    self.deadline_kind = _NO_DEADLINE
                return
            if self.deadline_kind == _IDLE_DEADLINE:
                return
        config = self.ctx.config
        timeout = config.timeout_write
        if self.writing_paused and timeout:
            if self.deadline_kind != _WRITE_DEADLINE:
                self.deadline = self.ctx.clock + timeout
                self.deadline_kind = _WRITE_DEADLINE
        elif self.core.blocked and timeout:
            self.deadline = min(self.core.blocked.values()) + timeout
            self.deadline_kind = _WINDOW_DEADLINE
        elif not self.streams and self.ctx.timeout_keep_alive:
            if self.deadline_kind != _IDLE_DEADLINE:
                self.deadline = self.ctx.clock + self.ctx.timeout_keep_alive
                self.deadline_kind = _IDLE_DEADLINE
        else:
            self.deadline = 0.0
            self.deadline_kind = _NO_DEADLINE

    def on_deadline(self) -> None:
        kind = self.deadline_kind
        self.deadline = 0.0
        self.deadline_kind = _NO_DEADLINE
        if self.closed:
            return
        if kind == _WRITE_DEADLINE:
            error_logger.info("Closing HTTP/2 connection from %s: client stopped reading", self.peer)
            self._abort_all()
            self.transport.abort()
            return
        if kind == _WINDOW_DEADLINE:
            core = self.core
            timeout = self.ctx.config.timeout_write
            now = self.ctx.loop.time()
            stalled = [sid for sid, since in core.blocked.items() if now - since >= timeout - 0.01]
            if stalled and core.window_blocked_on_connection():
                error_logger.info("Closing HTTP/2 connection from %s: connection window stayed at 0", self.peer)
                core.close(ErrorCodes.ENHANCE_YOUR_CALM)
                self._terminate()
                return
            for sid in stalled:
                error_logger.info("Resetting HTTP/2 stream %d from %s: its window stayed at 0", sid, self.peer)
                core.reset(sid, ErrorCodes.CANCEL)
                stream = self.streams.get(sid)
                if stream is not None:
                    stream.lost()
            self.flush()
            self._refresh_deadline()
            return
        if kind == _IDLE_DEADLINE and not self.streams:
            self.core.close(ErrorCodes.NO_ERROR)
            self.flush()
            self._close()
            return
        self._refresh_deadline()

    @property
    def idle_keep_alive(self) -> bool:
        """No streams, waiting for the next request."""
        return not self.streams and self.deadline_kind == _IDLE_DEADLINE and not self.closed

    def close_idle(self) -> None:
        """Close an idle connection to make room (--limit-concurrency): GOAWAY NO_ERROR."""
        self.core.close(ErrorCodes.NO_ERROR)
        self.flush()
        self._close()

    def shutdown(self) -> None:
        """Graceful shutdown: GOAWAY with the last stream id; finish the streams in flight, then close."""
        if self.closed:
            return
        self.core.start_shutdown()
        for stream in list(self.streams.values()):
            if type(stream) is H2WebSocket:
                stream.session.shutdown()  # Close 1001, as over HTTP/1.1
        self.flush()
        if not self.streams:
            self._close()

    def _abort_all(self) -> None:
        for stream in list(self.streams.values()):
            stream.lost()

    def _terminate(self) -> None:
        """The connection is over: flush the GOAWAY, tell every stream, close."""
        if self.closed:
            return
        self.flush()
        self._close()
        self._abort_all()

    def _close(self) -> None:
        if not self.closed:
            self.closed = True
            self.deadline = 0.0
            self.transport.close()

    def log_access(self, stream: H2Stream | H2WebSocket, status: int, size: int) -> None:
        """Report a finished request to the access log and metrics (once)."""
        observer = self.ctx.observer
        request = stream._request
        if observer is None or request is None:
            return
        stream._request = None
        peer = self.peer
        if self.proxy is not None:  # the forwarded client, as on HTTP/1.1
            client = stream.cycle.scope.get("client")
            if client is not None and client != self.client:
                peer = format_peer(client)
        observer.http(peer, request, status, size, stream._start, None)


class _RequestView:
    """What the access log and metrics need of an HTTP/2 request (the same
    attributes as an HTTP/1.1 :class:`~heron.protocol.http1.Request`)."""

    __slots__ = ("method", "target", "headers")
    http_version = "2"

    def __init__(self, method: bytes, target: bytes, headers: list[tuple[bytes, bytes]]) -> None:
        self.method = method
        self.target = target
        self.headers = headers
